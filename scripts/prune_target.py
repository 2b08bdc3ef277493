"""Keeps the shared cargo target folder from growing without bound: every
build of a test binary or crate leaves a file named `<name>-<hash>`, and old
hashes are never reused once the code or flags change. Of each name's large
files, this keeps the two newest (the current default and all-features
builds) and removes the rest; cargo rebuilds anything it still needs.

    python3 scripts/prune_target.py "$CARGO_TARGET_DIR"
"""

import os
import re
import sys
from collections import defaultdict

LARGE = 20 * 1024 * 1024


def prune(deps: str) -> int:
    groups = defaultdict(list)
    for name in os.listdir(deps):
        m = re.match(r"^(.*?)-([0-9a-f]{16})(\..*)?$", name)
        if not m:
            continue
        path = os.path.join(deps, name)
        st = os.stat(path)
        groups[m.group(1) + (m.group(3) or "")].append((st.st_mtime, st.st_size, path))
    freed = 0
    for files in groups.values():
        files.sort(reverse=True)
        if len(files) <= 2 or not any(size > LARGE for _, size, _ in files):
            continue
        for _, size, path in files[2:]:
            os.remove(path)
            freed += size
    return freed


if __name__ == "__main__":
    target = sys.argv[1]
    total = 0
    for profile in ("debug", "release"):
        deps = os.path.join(target, profile, "deps")
        if os.path.isdir(deps):
            total += prune(deps)
    print(f"pruned {total / 1e9:.1f} GB of stale build artifacts")
