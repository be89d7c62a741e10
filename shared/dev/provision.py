"""Provisioning: download or build, once into the cache, what the stack's infrastructure runs —
the Kafka broker's jars (Maven Central) and the FerretDB binary (the Go module proxy). Nothing
is started here (`python -m shared.dev.localstack provision`, `motcua local provision`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from shared.dev.stackconfig import (FERRETDB_BUILD, FERRETDB_MODULE, FERRETDB_VERSION,
                                    KAFKA_VERSION, REPO_ROOT, StackConfig, StackError, progress,
                                    tail)

# Source patches applied to FerretDB before the build: (file, text, replacement, times), or
# (file, None, content, 1) for a new file. docs/ferretdb.md says why each is there.
# 1. FerretDB v1.24.2's SQLite backend looks documents up by `_id` with the expression
#    `_ferretdb_sjson->'$._id'`, but creates the collection's unique `_id_` index on
#    `_ferretdb_sjson->"_id"`; SQLite matches index expressions textually, so every find, update
#    and delete by `_id` scans the table. Spell the lookup as the index is (same JSON path).
# 2. The backend pushes `_id` equality down to SQLite only when `_id` is the filter's only key,
#    so `{_id, rev}` (an optimistic-concurrency write) scans the table. Top-level filter keys
#    are ANDed and every handler filters the returned documents again with the whole filter,
#    so pushing the `_id` term down whatever the other keys are returns the same documents.
FERRETDB_PUSHDOWN_GO = """package sqlite

import "github.com/FerretDB/FerretDB/internal/types"

// motcuaIDPushdown reports whether the filter has exactly one top-level _id key (added by the
// motcua build: its equality is pushed down to SQLite whatever the other keys are, because
// handlers filter every returned document again with the whole filter).
func motcuaIDPushdown(filter *types.Document) bool {
	n := 0
	for _, k := range filter.Keys() {
		if k == "_id" {
			n++
		}
	}

	return n == 1
}
"""
FERRETDB_PATCHES = (
    ("internal/backends/sqlite/metadata/metadata.go",
     """IDColumn = DefaultColumn + "->'$._id'\"""",
     """IDColumn = DefaultColumn + `->"_id"`""", 1),
    # Query and Explain share the condition
    ("internal/backends/sqlite/collection.go",
     "if params.Filter.Len() == 1 {\n\t\tv, _ := params.Filter.Get(\"_id\")",
     "if motcuaIDPushdown(params.Filter) {\n\t\tv, _ := params.Filter.Get(\"_id\")", 2),
    ("internal/backends/sqlite/motcua_pushdown.go", None, FERRETDB_PUSHDOWN_GO, 1),
)


def patch_ferretdb(src: Path) -> None:
    """Apply FERRETDB_PATCHES to a writable copy of the FerretDB module; each must fit exactly."""
    for rel, old, new, times in FERRETDB_PATCHES:
        path = src / rel
        if old is None:
            if path.exists():
                raise StackError(f"FerretDB {FERRETDB_VERSION}: {rel} already exists; "
                                 f"the patch in shared/dev/provision.py does not fit this version")
            path.write_text(new)
            continue
        text = path.read_text()
        if text.count(old) != times:
            raise StackError(f"FerretDB {FERRETDB_VERSION}: {rel} does not contain {old!r} "
                             f"{times} time(s); the patch in shared/dev/provision.py does not "
                             f"fit this version")
        path.write_text(text.replace(old, new))


def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if not path:
        raise StackError(f"`{name}` not found on PATH: it is needed to {why}. "
                         f"Install it (java 17, maven 3.8+, go 1.22+) and retry.")
    return path


def run_logged(cmd: list[str], log_file: Path, what: str, cwd: Path | None = None, env=None,
               timeout=1800) -> str:
    """Run `cmd` to its end, its output appended to `log_file`; its stdout, or StackError."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=fh, timeout=timeout)
        fh.write(proc.stdout)
    if proc.returncode != 0:
        raise StackError(f"{what} failed (exit {proc.returncode}); see {log_file}:\n{tail(log_file)}")
    return proc.stdout.decode("utf-8", "replace")


def fetch_kafka(cfg: StackConfig) -> Path:
    """Resolve the broker jars from Maven Central into the cache (once)."""
    libs = cfg.kafka_libs
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = require_tool("mvn", f"download the Kafka {KAFKA_VERSION} jars from Maven Central")
    require_tool("java", "run the Kafka broker")
    pom = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
    progress(f"downloading Kafka {KAFKA_VERSION} jars from Maven Central into {libs}")
    run_logged([mvn, "-q", "-B", "-f", str(pom),
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
               cfg.cache_dir / "fetch-kafka.log", "maven (Kafka jars)")
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        raise StackError(f"maven finished but {libs} has no kafka_2.13-{KAFKA_VERSION}.jar")
    marker.write_text(KAFKA_VERSION)
    return libs


def build_ferretdb(cfg: StackConfig) -> Path:
    """Build FerretDB from the Go module proxy into the cache (once), with FERRETDB_PATCHES.

    `go install …@version` fails behind proxies that refuse the deprecation lookup, so download
    the module and build inside the module cache.
    """
    binary = cfg.ferretdb_bin
    if binary.exists():
        return binary
    go = require_tool("go", f"build FerretDB {FERRETDB_VERSION}")
    log = cfg.cache_dir / "build-ferretdb.log"
    tmp = cfg.cache_dir / "gomod-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    if not (tmp / "go.mod").exists():
        (tmp / "go.mod").write_text("module motcua/ferretdb-build\n\ngo 1.22\n")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    progress(f"downloading FerretDB {FERRETDB_VERSION} from the Go module proxy")
    out = run_logged([go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
               log, "go mod download (FerretDB)", cwd=tmp, env=env)
    # the module cache is read-only and FerretDB embeds build/version/version.txt (which a
    # release tarball fills in, and without which the binary panics): build a writable copy
    src = cfg.cache_dir / f"ferretdb-src-{FERRETDB_VERSION}"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(Path(json.loads(out)["Dir"]), src)
    for d, _dirs, files in os.walk(src):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    (src / "build" / "version" / "version.txt").write_text(FERRETDB_BUILD + "\n")
    patch_ferretdb(src)
    progress(f"building FerretDB (takes about a minute the first time) into {binary}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    run_logged([go, "build", "-o", str(binary) + ".tmp", "./cmd/ferretdb"], log, "go build (FerretDB)",
         cwd=src, env=env)
    shutil.rmtree(src, ignore_errors=True)
    os.replace(str(binary) + ".tmp", binary)
    return binary


def provision(cfg: StackConfig) -> None:
    """Download/build everything the infra needs, without starting it."""
    fetch_kafka(cfg)
    build_ferretdb(cfg)
