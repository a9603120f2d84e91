#!/bin/sh
# Runs the test cases that read the real Carvana sample: `real_sample.sh SOURCE_DIR TEST...`.
# The sample is $TL_CARVANA_SAMPLE, else SOURCE_DIR/../shared/data/carvana_sample; when it is absent
# this prints why and exits 77, which ctest reports as skipped.
src=$1
shift
sample=${TL_CARVANA_SAMPLE:-$src/../shared/data/carvana_sample}
if [ ! -d "$sample/train" ]; then
  echo "skipped: Carvana sample not found at $sample (set TL_CARVANA_SAMPLE to its folder)"
  exit 77
fi
status=0
for t in "$@"; do
  "$t" "--test-case=*real Carvana*" || status=1
done
exit $status
