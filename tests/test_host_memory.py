"""The commands' restart with glibc's malloc on transparent huge pages (rnn_vos_jax/runtime/host_memory.py)."""

import os
import subprocess
import sys

import pytest

from rnn_vos_jax.runtime import host_memory

GLIBC = (2, 36)


@pytest.mark.parametrize(
    "environ, mode, version, want",
    [
        ({}, "madvise", GLIBC, "glibc.malloc.hugetlb=1"),
        ({}, "always", GLIBC, "glibc.malloc.hugetlb=1"),
        # Other tunables the user set are kept, in front.
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            "madvise",
            GLIBC,
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
        ),
        # The user's own choice of the tunable wins, whatever it is (this also ends the restart).
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC, None),
        ({host_memory.OPT_OUT: "0"}, "madvise", GLIBC, None),
        ({}, "never", GLIBC, None),
        ({}, None, GLIBC, None),
        ({}, "madvise", (2, 34), None),  # glibc before the tunable existed
        ({}, "madvise", None, None),  # musl and other C libraries
    ],
)
def test_tunables_with_huge_pages(environ, mode, version, want):
    assert host_memory.tunables_with_huge_pages(environ, mode, version) == want


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert host_memory.thp_mode(str(path)) == "madvise"
    assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def test_reexec_restarts_once_with_the_same_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(host_memory, "glibc_version", lambda: GLIBC)
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "rnn_vos_jax.main", "--mode=eval"])
    environ = {"PATH": "/bin"}
    host_memory.reexec_with_huge_pages(environ, lambda *a: calls.append(a))
    assert calls == [
        (
            sys.executable,
            [sys.executable, "-m", "rnn_vos_jax.main", "--mode=eval"],
            {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
        )
    ]
    # The restarted process sees the tunable and goes on.
    host_memory.reexec_with_huge_pages(calls[0][2], lambda *a: calls.append(a))
    assert len(calls) == 1


@pytest.mark.skipif(
    host_memory.tunables_with_huge_pages({}, host_memory.thp_mode(), host_memory.glibc_version())
    is None,
    reason="no transparent huge pages or no glibc >= 2.35 here",
)
def test_a_real_process_restarts_into_the_tunable():
    code = (
        "import os, sys; print('run', flush=True); "
        "from rnn_vos_jax.runtime import host_memory; host_memory.reexec_with_huge_pages(); "
        "print(os.environ.get('GLIBC_TUNABLES'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}

    def run(environ):
        return subprocess.run(
            [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
        )

    out = run(env)
    # The code before the restart ran twice, the rest once, under the tunable.
    assert out.stdout.split() == ["run", "run", "glibc.malloc.hugetlb=1"]
    out = run({**env, host_memory.OPT_OUT: "0"})
    assert out.stdout.split() == ["run", "None"]
