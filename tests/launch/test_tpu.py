"""launch/tpu: the exact gcloud commands `python -m launch.tpu ... --dry-run` would run."""

import shlex
import subprocess
import sys

import pytest

from launch.tpu.commands import REPO, parse_args, plan

TRAIN = ["--", "--config=configs/dit.py:XL-2", "--config.data.path=/data/latents", "--config.mesh.fsdp=4"]


def commands(*argv):
    return [shlex.join(c) for c in plan(parse_args(list(argv)))]


def test_up_with_a_queued_spot_resource():
    cmds = commands("up", "--name=dit", "--zone=us-central2-b", "--accelerator=v4-32", "--queued", "--spot",
                    "--project=proj", "--workdir=gs://bucket/run", *TRAIN)
    zone = "--zone=us-central2-b --project=proj"
    assert cmds == [
        f"gcloud compute tpus queued-resources create dit --node-id=dit {zone} --accelerator-type=v4-32 "
        "--runtime-version=tpu-ubuntu2204-base --spot",
        f"gcloud compute tpus queued-resources describe dit {zone} '--format=value(state.state)'",
        f"git -C {REPO} archive --format=tar.gz --output=/tmp/jaxlab-src.tar.gz HEAD",
        f"gcloud compute tpus tpu-vm scp /tmp/jaxlab-src.tar.gz 'dit:~/jaxlab-src.tar.gz' {zone} --worker=all",
        f"gcloud compute tpus tpu-vm ssh dit {zone} --worker=all '--command=rm -rf ~/jaxlab && mkdir -p ~/jaxlab && "
        "tar -xzf ~/jaxlab-src.tar.gz -C ~/jaxlab && python3 -m pip install -q -U pip && python3 -m pip install -q -U "
        "'\"'\"'jax[tpu]'\"'\"' gcsfs && python3 -m pip install -q -e ~/jaxlab'",
        f"gcloud compute tpus tpu-vm ssh dit {zone} --worker=all '--command=cd ~/jaxlab && nohup python3 -m "
        "launch.train --distributed --workdir=gs://bucket/run --config=configs/dit.py:XL-2 "
        "--config.data.path=/data/latents --config.mesh.fsdp=4 > ~/jaxlab-train.log 2>&1 &'",
    ]


def test_create_vm_install_from_git_logs_delete():
    assert commands("create", "--name=t", "--zone=z", "--accelerator=v5litepod-16") == [
        "gcloud compute tpus tpu-vm create t --zone=z --accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite"
    ]
    (install,) = commands("install", "--name=t", "--zone=z", "--git=https://github.com/org/jaxlab@v0.1")
    assert install.startswith("gcloud compute tpus tpu-vm ssh t --zone=z --worker=all '--command=rm -rf ~/jaxlab && "
                              "git clone -q https://github.com/org/jaxlab ~/jaxlab && git -C ~/jaxlab checkout -q v0.1")
    assert commands("logs", "--name=t", "--zone=z") == [
        "gcloud compute tpus tpu-vm ssh t --zone=z --worker=0 '--command=tail -n 100 -f ~/jaxlab-train.log'"
    ]
    assert commands("delete", "--name=t", "--zone=z", "--queued") == [
        "gcloud compute tpus queued-resources delete t --zone=z --force --quiet"
    ]


def test_bad_arguments():
    with pytest.raises(SystemExit, match="must be a gs:// path"):
        commands("train", "--name=t", "--zone=z", "--workdir=/tmp/run", *TRAIN)
    with pytest.raises(SystemExit, match="pass the training config after --"):
        commands("train", "--name=t", "--zone=z", "--workdir=gs://b/r")
    with pytest.raises(SystemExit, match="no default runtime"):
        commands("create", "--name=t", "--zone=z", "--accelerator=tpu9-8")


def test_dry_run_prints_and_runs_nothing():
    proc = subprocess.run(
        [sys.executable, "-m", "launch.tpu", "delete", "--name=t", "--zone=z", "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "+ gcloud compute tpus tpu-vm delete t --zone=z --quiet\n"
