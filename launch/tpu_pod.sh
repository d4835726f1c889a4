#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: create it (optional), copy the repo to every worker, install,
# and run `python -m jaxinv.train` on all workers at once. jax.distributed is auto-detected on TPU
# pods, so no coordinator flags are needed. See launch/README.md.
#
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR CONFIG WORKDIR [--config.FIELD=V ...]
#   e.g. launch/tpu_pod.sh inv-v4 us-central2-b v4-32 configs/preim3d.py gs://bucket/preim3d
#
# Env: CREATE=1 creates the TPU VM (RUNTIME, default tpu-ubuntu2204-base); WORKDIR may be a gs://
# path (Orbax writes checkpoints there) or a shared filesystem path.
set -euo pipefail
NAME=$1; ZONE=$2; ACCEL=$3; CONFIG=$4; WORKDIR=$5; shift 5
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
REPO=$(cd "$(dirname "$0")/.." && pwd)

if [[ "${CREATE:-0}" == 1 ]]; then
  gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$ACCEL" \
    --version "$RUNTIME"
fi

tar -C "$REPO" --exclude .git -czf /tmp/jaxinv_src.tgz .
gcloud compute tpus tpu-vm scp /tmp/jaxinv_src.tgz "$NAME":/tmp/ --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "
  set -e; mkdir -p ~/jaxinv && tar -C ~/jaxinv -xzf /tmp/jaxinv_src.tgz && cd ~/jaxinv &&
  pip install -q -U 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html &&
  pip install -q -e . &&
  python -m jaxinv.train --config $CONFIG --workdir $WORKDIR $*"
