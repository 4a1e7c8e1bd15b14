"""Static configuration of the Pallas (Mosaic GPU) Based linear-attention kernel."""

import dataclasses

CHUNK = 64  # tokens per step: the wgmma M dimension
OPERAND_STAGINGS = ("smem", "smem_t", "registers", "p_registers")   # kernel.segment_call's
OPERAND_STAGING_CHOICES = ("auto",) + OPERAND_STAGINGS               # KernelConfig's


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  """Tuning knobs; every field is static (part of the jit cache key).

  max_value_block: widest slice of Dv one kernel launch carries (its fp32 state
    lives in registers: 192 x block / 128 threads per warpgroup).
  target_blocks: the sequence is split into segments until B * H * segments reaches this many
    thread blocks (2 per SM on a 132-SM H200), so that small batches fill the chip.
  min_segment_chunks: never split the sequence into segments shorter than this many chunks.
  max_concurrent_steps: TMA pipeline depth. Each stage holds 12 KiB (q, k, v tiles); with 3
    stages a block (~122 KiB of shared memory) no longer shares its SM with a second one:
    5.77 vs 5.40 ms at B = 128 on the H200 (L 8192, H 16).
  planner: how the number of segments is chosen (api.plan_segments):
    "sm"    - the divisor of the chunk count with the lowest estimated time per SM
              (api.sm_cost: blocks per SM, a fixed cost per block, two blocks on an SM 1.3x
              faster than in turn; target_blocks / 2 = SMs). The default: on the H200 (H 16,
              Dv 64) its 8 segments at B = 1, L = 8192 took 0.0751 ms where the 16 of "waves"
              took 0.0816 (run s5d, timed as "waves" with target_blocks 132: the same plan),
              and with normalize=True at B = 4, L = 8000 (e2e's prompt) 0.3130 vs 0.4474 ms
              (run s5e; docs/benchmarks.md, "Descriptor spills removed").
    "waves" - the divisor of the chunk count with the fewest estimated block-waves of work,
              counting the state-only first pass as half a chunk per chunk (target_blocks =
              concurrent blocks). The default before session 5: on the H200 (L 8192, H 16,
              Dv 64) it took 0.108 ms at B = 1 and 0.743 ms at B = 16 where "fill" took 0.157
              and 0.810 (docs/benchmarks.md, "Time vs batch").
    "fill"  - the smallest divisor of the chunk count with B * H * segments >= target_blocks.
  schedule: how a block's work is laid out on warpgroups:
    "single" - one warpgroup runs each chunk as one chain of wgmmas and waits (kernel.py);
    "groups" - four warpgroups: one per 64-row psi group (features and state slice) and one
               for the intra-chunk scores, the outputs and the TMA loads (kernel_groups.py).
               Slower on the H200: 15.96 vs 10.53 ms at B = 256 and 1.032 vs 0.732 ms at
               B = 16 (L 8192, H 16): 512 threads per block cap registers at 128 per thread
               (ptxas spills) and its shared memory allows one block per SM.
  feature_waits: tensor-core waits per psi construction in the single-warpgroup kernel:
    3 - two products, one product, two products (two [64, 64] fp32 temporaries live);
    2 - three products, then two plus the q side's intra-chunk scores (three temporaries).
        Slower on the H200: 9.95 vs 8.98 ms at B = 256 and 0.708 vs 0.572 ms at B = 16
        (ptxas spills up to 604 bytes; docs/benchmarks.md, run s4d).
  key_sums: where the final k_state comes from when normalize=False (with normalize=True the
    kernel always carries the key sums, which feed the denominator):
    "kernel" - the kernel accumulates Gram rows sum_t [k_t, 1, ..., 1] k_t^T (one [64, 16]
               fp32 accumulator and one wgmma per chunk; the "single" schedule) or the
               192 psi key sums (three accumulators; the "groups" schedule). The default.
    "xla"    - an XLA Gram-matrix reduction of k (sum k k^T, sum k, count), which frees the
               kernel of all key-sum accumulators. Slower on the H200: its transposes and
               gemm cost more than the kernel saves (0.775 vs 0.740 ms at B = 16, 11.49 vs
               10.55 ms at B = 256 against the three-accumulator kernel, run s4b).
  fresh_views: (single-warpgroup kernel) take every shared-memory view inside the chunk loop
    through an opaque 0 (kernel.fresh_at), so that ptxas computes addresses and wgmma
    descriptors where they are used instead of holding them across the loop, where the
    register-bound kernel spilled them and reloaded them every chunk. The default: on the
    H200 (L 8192, H 16, Dv 64) 7.21 vs 8.95 ms at B = 256, 0.453 vs 0.573 ms at B = 16 and
    4.05 vs 6.19 ms with normalize=True at B = 128 (run s5a, docs/benchmarks.md).
  overlap_output: (single-warpgroup kernel, feature_waits=3) issue the k side's first two
    feature products together with a chunk's output wgmmas and wait for both at once: one
    tensor-core wait less per chunk, two more [64, 64] fp32 values live at it. Not faster on
    the H200: within 0.6% of the session-5 default without normalization, 5.4% slower with
    it, where it spills (run s7a, docs/benchmarks.md); it also rules out register operands.
  operand_staging: (single-warpgroup kernel) how the key features psi_k(K), the Gram left
    factor and the intra-chunk scores P reach the tensor cores:
    "auto"      - "registers" on the GPU when feature_waits=3 and overlap_output is off,
                  "smem_t" (the same values) in the CPU interpreter, else "smem". The default.
    "registers" - psi_k^T [features, tokens] built directly by transposed products and fed,
                  with the left factor^T and P, to the wgmmas from registers: per 64-token
                  chunk ~80 KB less shared-memory store and read traffic, 16-32 more live
                  registers. On the H200 (L 8192, H 16, Dv 64) 6.55 vs 7.18 ms at B = 256,
                  0.393 vs 0.446 ms at B = 16, 0.0696 vs 0.0746 ms at B = 1 and 3.63 vs
                  4.08 ms with normalize=True at B = 128 (run s7a, docs/benchmarks.md). The
                  CPU interpreter cannot run it (it takes only shared-memory A operands).
    "smem_t"    - psi_k^T and the left factor^T as in "registers", staged in shared memory:
                  the same values, for the interpreter.
    "p_registers" - only P from registers, the keys as in "smem" (6.87 ms at B = 256).
    "smem"      - psi_k [tokens, features] and P stored to shared memory, psi_k read
                  transposed by the state update (the default up to session 6).
  """

  max_value_block: int = 64
  target_blocks: int = 264
  min_segment_chunks: int = 4
  max_concurrent_steps: int = 2
  planner: str = "sm"
  key_sums: str = "kernel"
  schedule: str = "single"
  feature_waits: int = 3
  fresh_views: bool = True
  overlap_output: bool = False
  operand_staging: str = "auto"

  def __post_init__(self):
    if self.max_value_block % 16 or not 16 <= self.max_value_block <= 128:
      raise ValueError(
          f"KernelConfig.max_value_block must be a multiple of 16 in [16, 128]; got "
          f"{self.max_value_block}")
    if self.target_blocks < 1 or self.min_segment_chunks < 1:
      raise ValueError(
          "KernelConfig.target_blocks and min_segment_chunks must be >= 1; got "
          f"{self.target_blocks}, {self.min_segment_chunks}")
    if self.planner not in ("sm", "fill", "waves"):
      raise ValueError(
          f"KernelConfig.planner must be 'sm', 'waves' or 'fill'; got {self.planner!r}")
    if self.schedule not in ("single", "groups"):
      raise ValueError(
          f"KernelConfig.schedule must be 'single' or 'groups'; got {self.schedule!r}")
    if self.feature_waits not in (2, 3):
      raise ValueError(f"KernelConfig.feature_waits must be 2 or 3; got {self.feature_waits!r}")
    if self.key_sums not in ("kernel", "xla"):
      raise ValueError(f"KernelConfig.key_sums must be 'kernel' or 'xla'; got {self.key_sums!r}")
    for name in ("fresh_views", "overlap_output"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"KernelConfig.{name} must be a bool; got {getattr(self, name)!r}")
    if self.overlap_output and self.feature_waits != 3:
      raise ValueError("KernelConfig.overlap_output needs feature_waits=3; got "
                       f"feature_waits={self.feature_waits}")
    if self.operand_staging not in OPERAND_STAGING_CHOICES:
      raise ValueError("KernelConfig.operand_staging must be 'auto', 'smem', 'smem_t', "
                       f"'registers' or 'p_registers'; got {self.operand_staging!r}")
    if (self.operand_staging not in ("auto", "smem")
        and (self.feature_waits != 3 or self.overlap_output)):
      raise ValueError(f"KernelConfig.operand_staging={self.operand_staging!r} needs "
                       "feature_waits=3 and overlap_output=False")
    if self.max_concurrent_steps < 1:
      raise ValueError(
          f"KernelConfig.max_concurrent_steps must be >= 1; got {self.max_concurrent_steps}")

  def resolved_staging(self, interpret: bool) -> str:
    """operand_staging with "auto" resolved for the GPU (interpret=False) or the interpreter."""
    if self.operand_staging != "auto":
      return self.operand_staging
    if self.feature_waits != 3 or self.overlap_output:
      return "smem"
    return "smem_t" if interpret else "registers"
