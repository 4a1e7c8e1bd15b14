"""Mosaic GPU (Hopper) kernel for the gated linear layer of a SwiGLU MLP, fused with its gate.

    y = (x @ W)[:, :N] * silu((x @ W)[:, N:])       x [M, K] bf16, W [K, 2N] bf16 -> y [M, N] bf16

XLA runs this as a cuBLAS gemm that writes h = x @ W ([M, 2N] bf16) and a separate elementwise
kernel that reads h back and writes y: 10N bytes per row of memory traffic besides the gemm's
inputs (write 4N, read 4N, write 2N), against 2N when the gate is applied to the fp32
accumulators before the single store of y.

A tile is 2 x tile_m rows and tile_n output columns: the value columns [n tile_n, (n+1) tile_n)
and the gate columns N + the same. A thread block computes one tile, or (persistent) one block
per SM walks the tiles in turn. A warp-specialized pipeline
(`plgpu.emit_pipeline_warp_specialized`) has one memory warpgroup stream x, W_value and W_gate
tiles (tile_k wide) through shared memory by TMA while two compute warpgroups, one per tile_m
rows, accumulate value and gate tiles with wgmma in fp32 registers. Each compute warpgroup then
applies v * silu(g) in fp32, rounds once to bf16 and stores its [tile_m, tile_n] tile by TMA.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu


MAX_ACC_REGISTERS = 128   # of the 255 a compute thread may hold: value + gate accumulators


@dataclasses.dataclass(frozen=True)
class GatedLinearConfig:
  """Static tiling of the kernel (part of the jit cache key).

  tile_m: rows per compute warpgroup (a block has two: 2 x tile_m rows).
  tile_n: output columns per block (one value and one gate accumulator of [tile_m, tile_n]
    fp32 per compute warpgroup: 2 x tile_m x tile_n / 128 registers per thread).
  tile_k: reduction step (64 bf16 = one 128-byte swizzled row).
  max_concurrent_steps: TMA pipeline stages; each holds 2 tile_m x tile_k + 2 tile_k x tile_n
    bf16 (48 KiB for the defaults).
  persistent: one block per SM walking the tiles in turn (the memory warpgroup starts the next
    tile's loads while the compute warpgroups finish the last one), instead of one block per
    tile.
  """

  tile_m: int = 128
  tile_n: int = 64
  tile_k: int = 64
  max_concurrent_steps: int = 4
  persistent: bool = False

  def __post_init__(self):
    if self.tile_m not in (64, 128) or self.tile_n not in (64, 128):
      raise ValueError("GatedLinearConfig.tile_m and tile_n must be 64 or 128; got "
                       f"{self.tile_m} and {self.tile_n}")
    if 2 * self.tile_m * self.tile_n // 128 > MAX_ACC_REGISTERS:
      raise ValueError(f"GatedLinearConfig: tile_m x tile_n = {self.tile_m} x {self.tile_n} "
                       f"needs {2 * self.tile_m * self.tile_n // 128} accumulator registers per "
                       f"thread; at most {MAX_ACC_REGISTERS}")
    if self.tile_k != 64:
      raise ValueError(f"GatedLinearConfig.tile_k must be 64; got {self.tile_k}")
    if self.max_concurrent_steps < 2:
      raise ValueError("GatedLinearConfig.max_concurrent_steps must be >= 2; got "
                       f"{self.max_concurrent_steps}")


def _transforms():
  """(8, 64) bf16 tiles with a 128-byte swizzle: every operand and the output tile."""
  return plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128)


def _block(x_gmem, w_gmem, y_gmem, *, hidden: int, config: GatedLinearConfig):
  """One block: the tile at its grid index, or (config.persistent) the tiles the "sm" axis deals
  it. Tile (mi, ni): rows [mi 2 tile_m, (mi+1) 2 tile_m), output columns [ni tile_n, ...)."""
  tm, tn, tk = config.tile_m, config.tile_n, config.tile_k
  m_iters, n_iters = x_gmem.shape[0] // (2 * tm), hidden // tn
  k_iters = x_gmem.shape[1] // tk

  def operands(mi, ni):
    return (x_gmem.at[pl.ds(mi * 2 * tm, 2 * tm)], w_gmem.at[:, pl.ds(ni * tn, tn)],
            w_gmem.at[:, pl.ds(hidden + ni * tn, tn)])

  def make_pipeline(mma, compute_context):
    return plgpu.emit_pipeline_warp_specialized(
        mma, grid=(k_iters,), memory_registers=40,
        in_specs=[plgpu.BlockSpec((2 * tm, tk), lambda k: (0, k), transforms=_transforms()),
                  plgpu.BlockSpec((tk, tn), lambda k: (k, 0), transforms=_transforms()),
                  plgpu.BlockSpec((tk, tn), lambda k: (k, 0), transforms=_transforms())],
        wg_axis="wg", num_compute_wgs=2, max_concurrent_steps=config.max_concurrent_steps,
        compute_context=compute_context)

  ignore = lambda *_, **__: None
  allocations = make_pipeline(ignore, ignore).get_allocations(*operands(0, 0))

  @functools.partial(pl.run_scoped, allocations=allocations,
                     y_smem=plgpu.SMEM((2, tm, tn), jnp.bfloat16, transforms=_transforms()),
                     collective_axes="wg")
  def _shared(allocations, y_smem):
    def tile(mi, ni):
      def compute_context(eval_pipeline):
        wg = lax.axis_index("wg")

        @functools.partial(pl.run_scoped, acc_v=plgpu.ACC((tm, tn), jnp.float32),
                           acc_g=plgpu.ACC((tm, tn), jnp.float32))
        def _accumulators(acc_v, acc_g):
          eval_pipeline((acc_v, acc_g))
          value, gate = acc_v[...], acc_g[...]                         # [tm, tn] fp32 each
          y = value * gate / (1.0 + jnp.exp(-gate))                    # v * silu(g)
          y_smem.at[wg][...] = y.astype(jnp.bfloat16)
          plgpu.commit_smem()
          rows = pl.ds(mi * 2 * tm + wg * tm, tm)
          plgpu.copy_smem_to_gmem(y_smem.at[wg], y_gmem.at[rows, pl.ds(ni * tn, tn)])
          plgpu.wait_smem_to_gmem(0, wait_read_only=True)    # y_smem is reused next tile

      def mma(idxs, x_smem, wv_smem, wg_smem, carry):
        del idxs
        acc_v, acc_g = carry
        x_rows = x_smem.at[pl.ds(lax.axis_index("wg") * tm, tm)]      # [tm, tk]
        plgpu.wgmma(acc_v, x_rows, wv_smem)
        plgpu.wgmma(acc_g, x_rows, wg_smem)
        plgpu.wgmma_wait(0)
        return carry

      make_pipeline(mma, compute_context)(*operands(mi, ni), allocations=allocations)

    if config.persistent:
      # Consecutive tiles share their rows of x; blocks take them in turn, so the tiles in
      # flight at once read few row blocks and every weight column block.
      @plgpu.nd_loop((m_iters, n_iters), collective_axes="sm")
      def _tiles(loop_info):
        mi, ni = loop_info.index
        tile(mi, ni)
    else:
      tile(lax.axis_index("m"), lax.axis_index("n"))


INTERPRET_BLOCKS = 3   # persistent blocks in the CPU interpreter (uneven shares of the tiles)
H200_SMS = 132         # stands in when no GPU is visible (CUDA lowering on a CPU host)


def _num_blocks(interpret) -> int:
  """Persistent blocks: one per SM of the GPU (one block fills an SM's shared memory)."""
  if interpret is not None:
    return INTERPRET_BLOCKS
  try:
    return jax.local_devices(backend="gpu")[0].core_count
  except RuntimeError:
    return H200_SMS


def gated_linear_call(x, w, *, config: GatedLinearConfig = GatedLinearConfig(),
                      interpret=None) -> jax.Array:
  """y = (x @ w)[:, :N] * silu((x @ w)[:, N:]) on the kernel.

  x: [M, K] bf16 with M a multiple of 2 tile_m and K of tile_k; w: [K, 2N] bf16 with N a
  multiple of tile_n -> y [M, N] bf16. The caller (api.py) pads M and checks the rest.
  """
  m = x.shape[0]
  hidden = w.shape[1] // 2
  if config.persistent:
    tiles = (m // (2 * config.tile_m)) * (hidden // config.tile_n)
    grid, grid_names = (min(tiles, _num_blocks(interpret)),), ("sm",)
  else:
    # "n" is the fastest grid axis: the blocks running at once share rows of x (read from HBM
    # once, then from L2) and sweep the weights, which stay in L2.
    grid, grid_names = (hidden // config.tile_n, m // (2 * config.tile_m)), ("n", "m")
  call = plgpu.kernel(
      functools.partial(_block, hidden=hidden, config=config),
      out_type=jax.ShapeDtypeStruct((m, hidden), jnp.bfloat16),
      grid=grid, grid_names=grid_names,
      num_threads=3, thread_name="wg",
      compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
      interpret=interpret)
  return call(x, w)
