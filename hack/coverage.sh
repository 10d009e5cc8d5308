#!/usr/bin/env bash
# Prints each package's statement coverage from a profile written with
# -coverpkg, so that code exercised by another package's tests counts:
# the controllers run inside the webhook suite's manager, and go test's own
# per-package line counts only the tests in the package itself.
set -euo pipefail
profile=${1:-cover.out}
# A profile line: <file>:<start>,<end> <statements> <count>. With -coverpkg
# each test binary writes every block, so a block counts once, covered if
# any binary ran it.
awk 'NR > 1 {
	split($1, loc, ":"); file = loc[1]; block = $1
	stmts[block] = $2
	if ($3 > 0) hit[block] = 1
	n = split(file, parts, "/"); pkg = parts[1]
	for (i = 2; i < n; i++) pkg = pkg "/" parts[i]
	pkgOf[block] = pkg
}
END {
	for (b in stmts) { total[pkgOf[b]] += stmts[b]; if (b in hit) covered[pkgOf[b]] += stmts[b] }
	for (p in total) printf "%-55s %5.1f%% of %d statements\n", p, 100 * covered[p] / total[p], total[p]
}' "$profile" | sort
