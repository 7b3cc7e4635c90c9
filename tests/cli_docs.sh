#!/usr/bin/env bash
# Writes the --help of every stage and of each of its subcommands into a folder, one file each:
# <stage>.txt and <stage>-<command>.txt (`make cli-docs` writes docs/cli/; a test compares).
# The subcommands come from the stage itself (`--pf-flags`); the width is fixed at 100 columns.
set -euo pipefail
bin=${1:?usage: cli_docs.sh BIN_DIR OUT_DIR}
out=${2:?usage: cli_docs.sh BIN_DIR OUT_DIR}
python=${PHENOFLOW_PYTHON:-python3}
mkdir -p "$out"
rm -f "$out"/pf-*.txt
for binary in "$bin"/pf-*; do
    [ -x "$binary" ] && [ -f "$binary" ] || continue
    stage=$(basename "$binary")
    case $stage in *.d|*.*) continue ;; esac
    COLUMNS=100 "$binary" --help > "$out/$stage.txt"
    "$binary" --pf-flags | "$python" -c 'import json, sys; print("\n".join(c for c in json.load(sys.stdin) if c))' |
    while read -r command; do
        [ -n "$command" ] || continue
        COLUMNS=100 "$binary" "$command" --help > "$out/$stage-$command.txt"
    done
done
echo "cli-docs: wrote $(ls "$out" | wc -l) help texts into $out"
