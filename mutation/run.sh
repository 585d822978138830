#!/usr/bin/env bash
# Mutation check of the Python around the kernels with mutmut 3 (see mutation/README.md):
#   mutation/run.sh                      every mutant of mutation/mutmut.cfg's modules
#   mutation/run.sh "models.stylegan2*"  only those whose names match
#   mutation/run.sh ops                  a named scope of mutation/scopes.txt (its patterns)
# The tracked tree (with uncommitted changes) is copied to $MUTATION_TREE (default: a new temporary
# folder) and mutated there, never in the clone. Results: mutmut results / mutmut browse, run there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# A scope's "tests:" line replaces mutmut.cfg's test selection (the tests that are its oracles).
patterns=() tests=()
for arg in "$@"; do
    scope_lines() {
        awk -v name="$arg:" '/^[^ #]/ {current = $1} /^ +[^ #]/ && current == name' "$root/mutation/scopes.txt"
    }
    mapfile -t scope < <(scope_lines | awk '$1 != "tests:" {print $1}')
    mapfile -t scope_tests < <(scope_lines | awk '$1 == "tests:" {for (i = 2; i <= NF; i++) print $i}')
    if ((${#scope[@]})); then patterns+=("${scope[@]}"); else patterns+=("$arg"); fi
    tests+=("${scope_tests[@]}")
done
tree=${MUTATION_TREE:-$(mktemp -d -t pixelfolder-mutation.XXXXXX)}
mkdir -p "$tree"
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$tree"
awk -v tests="${tests[*]}" '
    /^pytest_add_cli_args_test_selection =/ && tests != "" {
        print; n = split(tests, selected, " "); for (i = 1; i <= n; i++) print "    " selected[i]; replacing = 1; next
    }
    replacing && /^ / {next}
    {replacing = 0; print}' "$root/mutation/mutmut.cfg" > "$tree/setup.cfg"
cd "$tree"
# One thread per test process (--max-children of them; fork is safe without an OpenMP pool), and no
# C++ build in the copy (no compiler: the reference backend runs): the Python is what is mutated.
export OMP_NUM_THREADS=1 CXX=no-compiler-for-mutation-runs
# mutation/pytest_fork_safe.py, which mutmut.cfg's -p loads: no lock shared by the forked processes.
export PYTHONPATH="$tree/mutation${PYTHONPATH:+:$PYTHONPATH}"
nice mutmut run --max-children "${MUTATION_JOBS:-2}" "${patterns[@]}"
echo "mutants, results and the mutmut cache: $tree (cd there; mutmut results; mutmut show NAME)"
