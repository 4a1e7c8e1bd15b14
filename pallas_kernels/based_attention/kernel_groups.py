"""Warp-specialized Mosaic GPU kernel: one warpgroup per psi feature group, one for the output.

Same contract as `kernel.segment_call` (see there for shapes, the psi layout and the initial-state
format); `KernelConfig(schedule="groups")` selects it. The single-warpgroup kernel runs every
step of a chunk as one chain of dependent wgmmas and waits; here a block has four warpgroups that
work on the same chunk concurrently and hand data over through shared memory and barriers:

  group warpgroups g = 0, 1, 2 (each owns rows [64 g, 64 g + 64) of the 192-row psi state):
    1. psi_q(Q) rows of group g -> phi_q[buf, g]; bf16 of its state S_g -> s_bf16[buf, g]
       (and of its key sums when normalizing), then arrive at `ready[buf]`;
    2. psi_k(K) rows of group g -> phi_k[g]; issue S_g += phi_k[g]^T V (and KS_g += phi_k[g]^T 1)
       without waiting: the next chunk's first wait covers it.
  output warpgroup (3): P = causal(1 + s + s^2/2) for the chunk, waits for `ready[buf]`, then
    o = sum_g phi_q[buf, g] @ s_bf16[buf, g] + P @ V, arrives at `free[buf]`, stores o by TMA;
    it also issues every TMA load of q, k, v (a ring of max(2, max_concurrent_steps) slots, refilled
    once all four warpgroups arrived at `consumed[slot]`).

phi_q / s_bf16 are double-buffered (buf = chunk % 2), so the group warpgroups can run one chunk
ahead of the output warpgroup. Each group warpgroup builds its 64 psi rows with two exact
tensor-core products (`features.build_matrices`) per side and one wait, so its chain per chunk is
two waits long instead of the single-warpgroup kernel's nine. A group warpgroup holds only its
[64, ncols] slice of the state (32 fp32 registers per thread at ncols = 64).

Measured on the H200 (docs/benchmarks.md, "Kernel variants tried in session 3"): correct, but
1.15-1.5x slower than the single-warpgroup kernel. Four warpgroups (512 threads) cap registers
at 128 per thread (ptxas spills) and ~196 KiB of shared memory leave one block per SM, so an SM
still runs two dependent chains at a time, now with barrier hand-offs between them. It is kept
as the starting point for a layout that fits two blocks per SM.
"""

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.based_attention import features, kernel
from pallas_kernels.based_attention.config import CHUNK
from pallas_kernels.based_attention.kernel import _ONES_COLS, _taylor_scores, _tiled

_F = features.FEATURE_DIM        # 16
_G = features.PSI_GROUPS         # 3 group warpgroups
_OUT_WG = _G                     # index of the output / TMA warpgroup
_WGMMA = plgpu.Layout.WGMMA


def _select(g, options):
  """options[g] for a traced warpgroup index g (options: 3 Python ints)."""
  return jnp.where(g == 0, options[0], jnp.where(g == 1, options[1], options[2]))


def _group_features(x_smem, mats_smem, g, side: str):
  """Rows [64 g, 64 g + 64) of psi_q (side "q") or psi_k ("k") of a [64, 16] tile, as bf16
  [64 tokens, 64]: (X @ A_g + c_a) * (X @ B_g + c_b), one wait (see features.build_matrices)."""
  shift0 = features.MAT_SHIFT0_Q if side == "q" else features.MAT_SHIFT0_K
  right2 = features.MAT_RIGHT2_Q if side == "q" else features.MAT_RIGHT2_K
  left = _select(g, (features.MAT_TILE, features.MAT_TILE, features.MAT_LEFT2))
  right = _select(g, (shift0, features.MAT_SHIFT1, right2))

  def body(acc_l, acc_r):
    plgpu.wgmma(acc_l, x_smem, mats_smem.at[left])
    plgpu.wgmma(acc_r, x_smem, mats_smem.at[right])
    return acc_l[...], acc_r[...]

  shape = plgpu.ACC((CHUNK, 64), jnp.float32)
  lhs, rhs = pl.run_scoped(body, shape, plgpu.ACC((CHUNK, 64), jnp.float32))   # [64, 64] each
  col = plgpu.broadcasted_iota(jnp.int32, (CHUNK, 64), 1, layout=_WGMMA)      # [64, 64]
  last = g == _G - 1                       # group 2: the linear and constant features
  lhs = lhs + jnp.where(jnp.logical_and(last, col >= _F), 1.0, 0.0)
  rhs = rhs + jnp.where(jnp.logical_and(last, col == 2 * _F), 1.0, 0.0)
  return (lhs * rhs).astype(jnp.bfloat16)


def segment_call(q, k, v, mats, init=None, *, num_segments: int, col0: int, ncols: int,
                 normalize: bool, eps: float, emit_output: bool, emit_state: bool,
                 max_concurrent_steps: int, key_sums: bool = True, two_waits: bool = False,
                 interpret=None):
  """Same arguments and results as `kernel.segment_call` (two_waits: no effect here, each
  group warpgroup builds its psi rows in one wait)."""
  del two_waits
  heads = q.shape[2]
  seg_len, seg_chunks = kernel.segment_chunks(q.shape[1], num_segments)
  stages = max(2, max_concurrent_steps)
  load_init = init is not None
  emit_ks = emit_state and key_sums
  need_ks = normalize or emit_ks
  consumers = _G + (1 if emit_output else 0)
  out_type = kernel.result_types(q, num_segments=num_segments, ncols=ncols,
                                 emit_output=emit_output, emit_state=emit_state, emit_ks=emit_ks)

  def body(*refs):
    q_ref, k_ref, v_ref, mats_ref, init_refs, o_ref, s_ref, ks_ref, refs = kernel.split_refs(
        refs, load_init=load_init, emit_output=emit_output, emit_state=emit_state,
        emit_ks=emit_ks)
    (mats_smem, q_smem, k_smem, v_smem, union, phi_k, ksb, ones_smem, p_smem, o_smem,
     loaded, consumed, ready, free, setup, init_bars, init_done, done) = refs
    (phi_q, s_bf16), (stage_s, stage_ks), (in_s_hi, in_s_lo, in_ks_hi, in_ks_lo, identity) = union

    wg = lax.axis_index("wg")
    h = lax.axis_index("h")
    seg = lax.axis_index("seg")
    b = lax.axis_index("b")
    block = (b * heads + h) * num_segments + seg
    start = seg * seg_len

    def tile_rows(c):
      return pl.ds(start + c * CHUNK, CHUNK)

    def load_chunk(c, slot):
      """TMA of chunk c's q (if needed), k and v into ring slot `slot`."""
      if emit_output:
        plgpu.copy_gmem_to_smem(q_ref.at[b, tile_rows(c), h], q_smem.at[slot],
                                loaded.at[slot])
      plgpu.copy_gmem_to_smem(k_ref.at[b, tile_rows(c), h], k_smem.at[slot],
                              loaded.at[stages + slot])
      plgpu.copy_gmem_to_smem(v_ref.at[b, tile_rows(c), h, pl.ds(col0, ncols)],
                              v_smem.at[slot], loaded.at[2 * stages + slot])

    def wait_chunk(slot):
      if emit_output:
        plgpu.barrier_wait(loaded.at[slot])
      plgpu.barrier_wait(loaded.at[stages + slot])
      plgpu.barrier_wait(loaded.at[2 * stages + slot])

    # ---------------- output warpgroup: TMA producer and (emit_output) the outputs ----------
    @pl.when(wg == _OUT_WG)
    def _output_wg():
      plgpu.copy_gmem_to_smem(mats_ref, mats_smem, setup.at[0])
      ones_smem[...] = jnp.ones((CHUNK, _ONES_COLS), jnp.bfloat16)
      if load_init:
        row = plgpu.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 0, layout=_WGMMA)
        col = plgpu.broadcasted_iota(jnp.int32, (CHUNK, CHUNK), 1, layout=_WGMMA)
        identity[...] = jnp.where(row == col, 1.0, 0.0).astype(jnp.bfloat16)
      plgpu.commit_smem()
      plgpu.barrier_arrive(setup.at[1])
      for c in range(min(stages, seg_chunks)):
        load_chunk(c, c)

      def refill(c):
        """Slot of chunk c is reloaded with chunk c + stages once every consumer is done."""
        @pl.when(c + stages < seg_chunks)
        def _():
          slot = lax.rem(c, stages)
          plgpu.barrier_wait(consumed.at[slot])
          load_chunk(c + stages, slot)

      if not emit_output:
        @pl.loop(0, seg_chunks)
        def _(c):
          refill(c)
        return

      @pl.loop(0, seg_chunks)
      def _(c):
        slot = lax.rem(c, stages)
        buf = lax.rem(c, 2)
        wait_chunk(slot)
        scores = _taylor_scores(q_smem.at[slot], k_smem.at[slot])        # [64 q, 64 k] bf16
        p_smem[...] = scores
        plgpu.commit_smem()
        plgpu.barrier_wait(ready.at[buf])

        out = kernel.chunk_output(
            [phi_q.at[buf, g] for g in range(_G)], [s_bf16.at[buf, g] for g in range(_G)],
            [ksb.at[buf, g] for g in range(_G)], p_smem, v_smem.at[slot], ones_smem,
            ncols=ncols, normalize=normalize, eps=eps)                   # [64, ncols] f32
        plgpu.barrier_arrive(free.at[buf])
        plgpu.barrier_arrive(consumed.at[slot])
        # Refill the previous chunk's slot: by now the group warpgroups are past it.
        @pl.when(c >= 1)
        def _():
          refill(c - 1)
        plgpu.wait_smem_to_gmem(1, wait_read_only=True)                  # o_smem[buf] is free
        o_smem[buf] = out.astype(jnp.bfloat16)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_smem.at[buf], o_ref.at[b, tile_rows(c), h])

      if emit_state:           # the group warpgroups stage the state over phi_q / s_bf16
        plgpu.barrier_arrive(done)
      plgpu.wait_smem_to_gmem(0)

    # ---------------- group warpgroups: psi features and the state --------------------------
    @pl.when(wg < _OUT_WG)
    def _group_wg():
      g = wg
      plgpu.barrier_wait(setup.at[0])                                    # matrices
      plgpu.barrier_wait(setup.at[1])                                    # ones, identity

      def run(s_acc, ks_acc=None):
        if load_init:
          num = 4 if need_ks else 2
          dsts = (in_s_hi.at[g], in_s_lo.at[g], in_ks_hi.at[g], in_ks_lo.at[g])[:num]
          for i in range(num):
            plgpu.copy_gmem_to_smem(init_refs[i].at[block, g], dsts[i], init_bars.at[4 * g + i])
          for i in range(num):
            plgpu.barrier_wait(init_bars.at[4 * g + i])
          plgpu.wgmma(s_acc, identity, dsts[0])
          plgpu.wgmma(s_acc, identity, dsts[1])
          if need_ks:
            plgpu.wgmma(ks_acc, identity, dsts[2])
            plgpu.wgmma(ks_acc, identity, dsts[3])
          plgpu.wgmma_wait(0)
          # The staging area aliases phi_q / s_bf16: every group must be done reading it.
          plgpu.barrier_arrive(init_done)
          plgpu.barrier_wait(init_done)

        def step(c, carry):
          s_acc, ks_acc = carry
          slot = lax.rem(c, stages)
          buf = lax.rem(c, 2)
          wait_chunk(slot)
          if emit_output:
            @pl.when(c >= 2)
            def _():
              plgpu.barrier_wait(free.at[buf])
            # Its wait also retires the previous chunk's state update.
            feats_q = _group_features(q_smem.at[slot], mats_smem, g, "q")    # [64, 64] bf16
          else:
            plgpu.wgmma_wait(0)                                # the previous state update
          @pl.when(c >= 1)
          def _():
            plgpu.barrier_arrive(consumed.at[lax.rem(c + stages - 1, stages)])
          if emit_output:
            phi_q[buf, g] = feats_q
            s_bf16[buf, g] = s_acc[...].astype(jnp.bfloat16)
            if normalize:
              ksb[buf, g] = ks_acc[...].astype(jnp.bfloat16)
            plgpu.commit_smem()
            plgpu.barrier_arrive(ready.at[buf])
          phi_k[g] = _group_features(k_smem.at[slot], mats_smem, g, "k")
          plgpu.commit_smem()
          plgpu.wgmma(s_acc, phi_k.at[g].T, v_smem.at[slot])
          if need_ks:
            plgpu.wgmma(ks_acc, phi_k.at[g].T, ones_smem)
          return s_acc, ks_acc

        s_acc, ks_acc = lax.fori_loop(0, seg_chunks, step, (s_acc, ks_acc))
        plgpu.wgmma_wait(0)
        plgpu.barrier_arrive(consumed.at[lax.rem(seg_chunks - 1, stages)])
        if emit_state:
          # The fp32 staging area aliases phi_q / s_bf16: wait until nobody reads them.
          plgpu.barrier_arrive(done)
          plgpu.barrier_wait(done)
          stage_s[g] = s_acc[...]
          if emit_ks:
            stage_ks[g] = ks_acc[...]
          plgpu.commit_smem()
          plgpu.copy_smem_to_gmem(stage_s.at[g], s_ref.at[block, g])
          if emit_ks:
            plgpu.copy_smem_to_gmem(stage_ks.at[g], ks_ref.at[block, g])
          plgpu.wait_smem_to_gmem(0)

      accs = [plgpu.ACC((CHUNK, ncols), jnp.float32)]
      if need_ks:
        accs.append(plgpu.ACC((CHUNK, _ONES_COLS), jnp.float32))
      pl.run_scoped(run, *accs)

  bf16 = lambda shape: plgpu.SMEM(shape, jnp.bfloat16, transforms=_tiled())
  union = plgpu.RefUnion(
      (bf16((2, _G, CHUNK, 64)),                                     # phi_q[buf, g]
       bf16((2, _G, CHUNK, ncols))),                                 # s_bf16[buf, g]
      (plgpu.SMEM((_G, CHUNK, ncols), jnp.float32),                  # final state staging
       plgpu.SMEM((_G, CHUNK, _ONES_COLS), jnp.float32)),
      (bf16((_G, CHUNK, ncols)), bf16((_G, CHUNK, ncols)),           # initial state hi, lo
       bf16((_G, CHUNK, _ONES_COLS)), bf16((_G, CHUNK, _ONES_COLS)),
       bf16((CHUNK, CHUNK))),                                        # identity
  )
  done_arrivals = _G + (1 if emit_output else 0)
  scratch = (
      plgpu.SMEM((features.NUM_MATS, _F, 64), jnp.bfloat16, transforms=_tiled()),  # matrices
      bf16((stages, CHUNK, _F)),                                     # q ring
      bf16((stages, CHUNK, _F)),                                     # k ring
      bf16((stages, CHUNK, ncols)),                                  # v ring
      union,
      bf16((_G, CHUNK, 64)),                                         # phi_k[g]
      bf16((2, _G, CHUNK, _ONES_COLS)),                              # bf16 key sums (normalize)
      bf16((CHUNK, _ONES_COLS)),                                     # all ones
      bf16((CHUNK, CHUNK)),                                          # intra-chunk P
      bf16((2, CHUNK, ncols)),                                       # output tiles
      plgpu.Barrier(num_barriers=3 * stages),                        # loaded[q|k|v x slot]
      plgpu.Barrier(num_arrivals=consumers, num_barriers=stages),    # consumed[slot]
      plgpu.Barrier(num_arrivals=_G, num_barriers=2),                # ready[buf]
      plgpu.Barrier(num_arrivals=1, num_barriers=2),                 # free[buf]
      plgpu.Barrier(num_arrivals=1, num_barriers=2),                 # setup: mats TMA, smem
      plgpu.Barrier(num_barriers=4 * _G),                            # initial-state TMAs
      plgpu.Barrier(num_arrivals=_G),                                # init_done
      plgpu.Barrier(num_arrivals=done_arrivals),                     # done
  )
  return kernel.launch(body, q, k, v, mats, init, out_type=out_type, scratch=scratch,
                       num_segments=num_segments, interpret=interpret, num_threads=_G + 1)
