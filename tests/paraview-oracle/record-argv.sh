#!/bin/sh
# Stands in for the program a ParaView server command would start. It records how it was
# started and exits 0: the program path ($0) and the arguments, NUL-separated, to ../record.argv,
# and its environment (NUL-separated) to ../record.env, both relative to its own folder.
# record.argv is written last and renamed into place, so a reader never sees half a record.
dir="${0%/*}/.."
printf '%s\0' "$0" "$@" > "$dir/record.argv.part"
/usr/bin/env -0 > "$dir/record.env.part"
/bin/mv -f "$dir/record.env.part" "$dir/record.env"
/bin/mv -f "$dir/record.argv.part" "$dir/record.argv"
exit 0
