"""Cloud TPU helpers: create a TPU VM (or queued resource), install jaxlab on every worker, train.

  python -m launch.tpu up --name=dit-xl2 --zone=us-central2-b --accelerator=v4-32 --queued \\
      --workdir=gs://my-bucket/dit-xl2 -- --config=configs/dit.py:XL-2 --config.data.path=/data/latents

Every subcommand takes ``--dry-run`` (print the gcloud commands, run nothing). See
``launch/tpu/commands.py`` and docs/training.md.
"""
