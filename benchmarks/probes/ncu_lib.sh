# Sourced by the device scripts: ncu_one NAME ARGS... runs Nsight Compute (full set, SASS-level
# stall sampling) on one launch of the Pallas kernel (benchmarks/probes/ncu_kernel.py ARGS) and
# writes $OUT/NAME_details.txt and $OUT/NAME_sass.csv.gz. NCU_TIMEOUT (seconds, default 200)
# bounds the capture.
ncu_one() {
  name=$1; shift
  timeout "${NCU_TIMEOUT:-200}" ncu --clock-control none --kernel-name regex:mosaic --launch-skip 2 \
      --launch-count 1 --set full --import-source yes -f -o /tmp/$name \
      python3 benchmarks/probes/ncu_kernel.py "$@"
  ncu -i /tmp/$name.ncu-rep --page details > $OUT/${name}_details.txt 2>&1
  (ncu -i /tmp/$name.ncu-rep --page source --csv --print-source sass 2>&1 || \
   ncu -i /tmp/$name.ncu-rep --page source --csv 2>&1) | gzip > $OUT/${name}_sass.csv.gz
}
