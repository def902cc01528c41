"""launch/tpu executed against a fake ``gcloud`` and fake workers (tests/launch/fake_tpu.py): what it
creates, copies, installs and starts, that ``up`` is idempotent, and that it refuses bad input."""

import os
import shlex
import subprocess
import sys

import pytest

from launch.tpu.commands import main, parse_args, train_script
from tests.installed import ROOT
from tests.launch import fake_tpu

TRAIN = ["--", "--config=configs/dit.py:XL-2", "--config.data.path=gs://bucket/latents", "--config.mesh.fsdp=4"]
ZONE = ["--zone=us-central2-b", "--project=proj"]


@pytest.fixture
def cloud(tmp_path, monkeypatch):
    """A fake gcloud on PATH, and a small committed jaxlab-like checkout as the current directory."""
    root = tmp_path / "cloud"
    fake_tpu.install(tmp_path / "bin", root)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    checkout = tmp_path / "checkout"
    (checkout / "launch").mkdir(parents=True)
    (checkout / "launch" / "train.py").write_text("# the trainer\n")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    monkeypatch.chdir(checkout)
    return root, checkout


def up(*extra):
    main(["up", "--name=dit", *ZONE, "--accelerator=v4-32", "--workdir=gs://bucket/run", "--poll-seconds=0",
          *extra, *TRAIN])


def gcloud_verbs(root):
    return [" ".join(c["argv"][2:4]) for c in fake_tpu.calls(root) if c["role"] == "gcloud"]


def test_up_creates_copies_installs_python311_and_trains_on_every_worker(cloud):
    root, _ = cloud
    up()
    assert gcloud_verbs(root) == ["tpu-vm describe", "tpu-vm create", "tpu-vm describe", "tpu-vm describe",
                                  "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
    create = next(c["argv"] for c in fake_tpu.calls(root) if "create" in c["argv"])
    assert create[4:] == ["dit", *ZONE, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]
    calls = fake_tpu.calls(root)
    for i in range(fake_tpu.NUM_WORKERS):
        home = str(root / f"worker{i}")
        worker = [c for c in calls if c["home"] == home]
        # The committed checkout was unpacked; the image's python3 (3.10) only installed uv; uv made a 3.11 venv.
        assert (root / f"worker{i}" / "jaxlab" / "launch" / "train.py").read_text() == "# the trainer\n"
        system_python = [c["argv"] for c in worker if c["role"] == "python3"]
        assert system_python == [["-m", "pip", "install", "-q", "--user", "-U", "uv"]]
        uv = [c["argv"] for c in worker if c["role"] == "uv"]
        assert uv[0] == ["venv", "-q", "--python", "3.11", f"{home}/jaxlab-venv"]
        assert uv[1] == ["pip", "install", "-q", "--python", f"{home}/jaxlab-venv/bin/python", "jax[tpu]", "gcsfs",
                         "-e", f"{home}/jaxlab"]
        (train,) = [c for c in worker if c["role"] == "venv-python3.11"]
        assert train["cwd"] == f"{home}/jaxlab"
        assert train["argv"] == ["-m", "launch.train", "--distributed", "--workdir=gs://bucket/run", *TRAIN[1:]]


def test_rerunning_up_reuses_the_slice_and_leaves_the_trainer_alone(cloud):
    root, _ = cloud
    up()
    before = len(fake_tpu.calls(root))
    up()
    again = fake_tpu.calls(root)[before:]
    assert [" ".join(c["argv"][2:4]) for c in again if c["role"] == "gcloud"] == [
        "tpu-vm describe", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]  # no create
    assert {c["role"] for c in again} == {"gcloud", "pgrep"}  # nothing reinstalled, no second trainer


def test_up_after_a_preemption_recreates_the_slice(cloud):
    root, _ = cloud
    fake_tpu.set_resource(root, "PREEMPTED")
    up("--spot")
    verbs = gcloud_verbs(root)
    assert verbs[:3] == ["tpu-vm describe", "tpu-vm delete", "tpu-vm create"]
    assert any(c["role"] == "venv-python3.11" for c in fake_tpu.calls(root))


def test_queued_resource_is_waited_for_and_not_created_twice(cloud):
    root, _ = cloud
    fake_tpu.set_resource(root, "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE")  # an earlier `up` asked for it
    up("--queued", "--spot")
    verbs = gcloud_verbs(root)
    assert "queued-resources create" not in verbs
    assert verbs[:3] == ["queued-resources describe"] * 3 and verbs[3:] == ["tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
    fake_tpu.set_resource(root, "SUSPENDED")  # a preempted spot queued resource
    before = len(fake_tpu.calls(root))
    up("--queued", "--spot")
    create = [c["argv"] for c in fake_tpu.calls(root)[before:] if "create" in c["argv"]]
    assert create == [["compute", "tpus", "queued-resources", "create", "dit", "--node-id=dit", *ZONE,
                       "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base", "--spot"]]


def test_uncommitted_changes_are_refused_unless_allowed(cloud, capsys):
    root, checkout = cloud
    (checkout / "launch" / "train.py").write_text("# edited, not committed\n")
    (checkout / "notes.txt").write_text("untracked\n")
    with pytest.raises(SystemExit, match=r"1 file\(s\) have uncommitted changes \(launch/train.py\).*--allow-dirty"):
        main(["install", "--name=dit", *ZONE])
    assert "tpu-vm scp" not in gcloud_verbs(root)
    main(["install", "--name=dit", *ZONE, "--allow-dirty"])
    err = capsys.readouterr().err
    assert "1 untracked file(s) are not copied" in err and "uncommitted change(s) are left out" in err
    assert (root / "worker0" / "jaxlab" / "launch" / "train.py").read_text() == "# the trainer\n"  # HEAD's


def test_install_from_git_clones_the_ref_on_every_worker(cloud, tmp_path):
    root, checkout = cloud
    tag = ["git", "-C", str(checkout), "tag", "v0.1"]
    subprocess.run(tag, check=True)
    main(["install", "--name=dit", *ZONE, f"--git={checkout}@v0.1"])
    for i in range(fake_tpu.NUM_WORKERS):
        assert (root / f"worker{i}" / "jaxlab" / "launch" / "train.py").exists()
    assert gcloud_verbs(root) == ["tpu-vm ssh"]


def test_outside_a_checkout_install_needs_git(cloud, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="not inside a jaxlab git checkout.*--git=URL"):
        main(["install", "--name=dit", *ZONE])


def test_bad_arguments():
    with pytest.raises(SystemExit, match="must be a gs:// path"):
        parse_args(["train", "--name=t", "--zone=z", "--workdir=/tmp/run", *TRAIN])
    with pytest.raises(SystemExit, match="pass the training config after --"):
        parse_args(["train", "--name=t", "--zone=z", "--workdir=gs://b/r"])
    with pytest.raises(SystemExit, match="no default runtime"):
        parse_args(["create", "--name=t", "--zone=z", "--accelerator=tpu9-8"])


def test_a_worker_shell_runs_the_train_command_line():
    """The generated line is valid shell (bash -n) and quotes the user's arguments."""
    args = parse_args(["train", "--name=t", "--zone=z", "--workdir=gs://b/r", "--", "--config=configs/dit.py:XL-2",
                       "--config.sample.classes=(1, 2)"])
    script = train_script(args)
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
    assert shlex.quote("--config.sample.classes=(1, 2)") in script


def test_dry_run_prints_and_runs_nothing():
    proc = subprocess.run(
        [sys.executable, "-m", "launch.tpu", "delete", "--name=t", "--zone=z", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "+ gcloud compute tpus tpu-vm delete t --zone=z --quiet\n"
