"""A copy of the Pallas kernel module with stages that can be switched off, for timing them.

`ablated_kernel()` returns a module built from `pallas_kernels/based_attention/kernel.py` by text
edits; its `SKIP` set names the stages left out at trace time (results are then wrong: timing
only). Stages: feat_q, feat_k (feature construction), scores (intra-chunk P), out_inter
(psi(Q) @ S), out_intra (P @ V), out_store (output tile to GMEM), state (S += psi(K)^T V),
sb_store (bf16 copy of S for the next chunk). Each edit asserts that its anchor text still exists,
so a kernel change that breaks the edits fails loudly instead of timing the wrong thing. The
edits follow the shared-memory operand path (KernelConfig(operand_staging="smem")); the register
operands of the default since session 7 take other code, which they do not switch off.
"""

import importlib.util
import pathlib
import tempfile

KERNEL = pathlib.Path(__file__).resolve().parents[2] / "pallas_kernels/based_attention/kernel.py"

_EDITS = [
    ('_WGMMA = plgpu.Layout.WGMMA\n', '_WGMMA = plgpu.Layout.WGMMA\nSKIP = set()\n'),
    ('  `first_products` (X @ M_tile, X @ M_shift0), already computed by the caller.\n  """\n',
     '  `first_products` (X @ M_tile, X @ M_shift0), already computed by the caller.\n  """\n'
     '  if ("feat_" + side) in SKIP:\n    plgpu.commit_smem()\n    return\n'),
    ('            at(p_all)[...] = _taylor_scores(q_smem, k_smem)\n',
     '            if "scores" not in SKIP:\n'
     '              at(p_all)[...] = _taylor_scores(q_smem, k_smem)\n'),
    ('    for g in range(_G):\n      plgpu.wgmma(o_acc, phi[g], s_bf16[g])',
     '    for g in range(_G):\n      if "out_inter" in SKIP: break\n'
     '      plgpu.wgmma(o_acc, phi[g], s_bf16[g])'),
    ('    plgpu.wgmma(o_acc, p_smem, v_smem)\n',
     '    if "out_intra" not in SKIP:\n      plgpu.wgmma(o_acc, p_smem, v_smem)\n'),
    ('          plgpu.wait_smem_to_gmem(0, wait_read_only=True)\n'
     '          at(o_all)[...] = out.astype(jnp.bfloat16)\n'
     '          plgpu.commit_smem()\n'
     '          plgpu.copy_smem_to_gmem(at(o_all), o_gmem.at[pl.ds(idx[0] * CHUNK, CHUNK)])',
     '          if "out_store" not in SKIP:\n'
     '            plgpu.wait_smem_to_gmem(0, wait_read_only=True)\n'
     '            at(o_all)[...] = out.astype(jnp.bfloat16)\n'
     '            plgpu.commit_smem()\n'
     '            plgpu.copy_smem_to_gmem(at(o_all), o_gmem.at[pl.ds(idx[0] * CHUNK, CHUNK)])'),
    ('          for g in range(_G):\n            plgpu.wgmma(s_accs[g], at(phi_smem, g).T, v_smem)',
     '          for g in range(_G):\n            if "state" in SKIP: break\n'
     '            plgpu.wgmma(s_accs[g], at(phi_smem, g).T, v_smem)'),
    ('      def store_bf16_state(s_accs, ks_accs, at=static_at):\n',
     '      def store_bf16_state(s_accs, ks_accs, at=static_at):\n'
     '        if "sb_store" in SKIP:\n          plgpu.wgmma_wait(0)\n          return\n'),
]


def ablated_kernel():
  """Imports and returns the ablatable copy of kernel.py (module with SKIP and segment_call)."""
  source = KERNEL.read_text()
  for anchor, replacement in _EDITS:
    if source.count(anchor) != 1:
      raise RuntimeError(f"stage_ablation: anchor not found once in kernel.py: {anchor[:60]!r}")
    source = source.replace(anchor, replacement)
  path = pathlib.Path(tempfile.mkdtemp()) / "kernel_ablated.py"
  path.write_text(source)
  spec = importlib.util.spec_from_file_location("kernel_ablated", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
