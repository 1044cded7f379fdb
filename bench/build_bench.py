"""Build time of a small Python app (examples/python-web: Flask + gunicorn), cold vs warm.

Three situations, with the real Builder, once per installer (uv, then venv + pip; each
with caches of its own):

- cold: empty build cache (the installer downloads or reads the index, installs, caches
  the tree);
- installer cache only: the installed-tree cache removed, the installer's own cache kept
  (what a changed requirements.txt costs);
- warm: unchanged requirements, the cached tree is linked in (median of several runs).

Each run builds a fresh copy of the app's source, as a deploy does.

Run: .venv/bin/python bench/build_bench.py [--runs N] [--app DIR] [--installer uv|pip]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from shellwego.build.builder import Builder, BuildResult
from shellwego.runtime.user import NOBODY

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "python-web"


async def one_build(
    builder: Builder, app: Path, work: Path
) -> tuple[float, BuildResult, list[str]]:
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    shutil.copytree(app, src)
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    started = time.perf_counter()
    result = await builder.build(src, work / "out", log)
    return time.perf_counter() - started, result, lines


def used_cache(lines: list[str]) -> bool:
    return any(line.startswith("-----> Reusing cached") for line in lines)


async def main(app: Path, runs: int, installers: list[str]) -> None:
    print(f"app: {app} ({(app / 'requirements.txt').read_text().split()})")
    for installer in installers:
        print(f"--- installer: {installer}")
        await one_installer(app, runs, installer)


async def one_installer(app: Path, runs: int, installer: str) -> None:
    with tempfile.TemporaryDirectory(prefix="build-bench-") as tmp:
        root = Path(tmp)
        builder = Builder(root / "cache", python_installer=installer)

        cold, result, lines = await one_build(builder, app, root / "work")
        assert not used_cache(lines)
        print(f"cold build (empty cache):          {cold:7.3f} s")

        shutil.rmtree(builder.cache_for(NOBODY[0]) / "trees" / "python")  # the default user's
        pip_only, _, lines = await one_build(builder, app, root / "work")
        assert not used_cache(lines)
        print(f"installer cache only (tree gone):  {pip_only:7.3f} s")

        warm_times = []
        digests = set()
        for _ in range(runs):
            took, again, lines = await one_build(builder, app, root / "work")
            assert used_cache(lines), "the warm build did not reuse the dependency cache"
            warm_times.append(took)
            digests.add(again.sha256)
        print(
            f"warm build (cached tree), {runs} runs: median {statistics.median(warm_times):.3f} s, "
            f"min {min(warm_times):.3f} s, max {max(warm_times):.3f} s"
        )
        print(f"speed-up cold → warm: {cold / statistics.median(warm_times):.0f}x")
        print(
            f"slug: {result.size_bytes / 1024 / 1024:.1f} MiB, "
            f"identical slug on every warm rebuild: {len(digests) == 1}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--app", type=Path, default=EXAMPLE)
    parser.add_argument("--installer", choices=["uv", "pip"], action="append")
    args = parser.parse_args()
    asyncio.run(main(args.app, args.runs, args.installer or ["uv", "pip"]))
