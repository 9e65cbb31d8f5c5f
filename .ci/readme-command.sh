#!/usr/bin/env bash
# Print line N (1 or 2) of the first ```bash block of a README, its trailing `# comment` removed:
# the README's two commands, read at run time so CI runs exactly what the README tells people to run.
#   .ci/readme-command.sh 1 [README.md]   the main job (set up + python -m edgetune)
#   .ci/readme-command.sh 2 [README.md]   the test suite (set up + pytest)
# The comment is everything from the first whitespace-preceded `#` on, so the commands themselves
# must not contain ` #`. Fails (exit 1) if the line is missing or empty.
set -euo pipefail
n=${1:?usage: $0 N [README.md]}
readme=${2:-"$(dirname "$0")/../README.md"}
cmd=$(awk -v n="$n" '
  !inblock && /^```bash[[:space:]]*$/ { inblock = 1; next }
  inblock && /^```/ { exit }
  inblock && ++i == n { print; exit }' "$readme" | sed -E 's/[[:space:]]+#.*$//; s/^[[:space:]]+//; s/[[:space:]]+$//')
if [ -z "$cmd" ]; then
  echo "$0: no command on line $n of the first \`\`\`bash block of $readme" >&2
  exit 1
fi
printf '%s\n' "$cmd"
