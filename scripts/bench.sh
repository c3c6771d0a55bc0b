#!/usr/bin/env bash
# The benchmark against the anchors (issue #6), run by `make bench`.
#
# Measures, in one run and interleaved (repetition 1 of every operation and
# tool, then repetition 2, ...), three operations on two corpora:
#   create best_speed, create none, restore (truncate, into an empty directory)
#   and second backups (best_speed) reusing the first one's archive: of the
#   unchanged tree, and of a copy changed by scripts/bench_change.py (2% of
#   the files appended to, deleted or joined by new ones, one directory
#   renamed), against wings-replica's backup of the same tree and ours
#   without reuse (whose tar stream must be the reusing backup's)
# by these tools, each run as a child process and measured the same way:
#   ours            benches/archive.rs: one library call per process, without
#                   a progress callback (wings-replica reports no progress)
#   ours-progress   the same with a progress callback (create best_speed):
#                   the library then also totals the tree for percentages
#   ours-pure       ours built without ISA-L (`--no-default-features`, deflate
#                   by zlib-rs, into target/pure): create best_speed, and
#                   restore of its own archive (create none does not deflate)
#   wings-replica   the Wings 1.11 stand-in (anchor), create and restore
#   pigz            tar -cf - . | pigz -1 > OUT
#   gnu-tar-gz      tar -czf OUT . (gzip -6) and tar -xzf OUT
#   gnu-tar         tar -cf OUT .  (an uncompressed archive, to a file)
#   walk-pipe       tar -cf - . | cat > /dev/null: reads every byte, writes
#                   nothing; the floor for "create none"
#   walk-null       tar -cf - . > /dev/null: GNU tar notices /dev/null and
#                   reads no file contents at all (shown, not a floor)
#   ours-wr         ours restoring wings-replica's single-member archive
#   ours-fresh      ours without reuse (second_changed only)
# Corpora (on tmpfs, so the disk is not measured):
#   a    the Rust sysroot (`rustc --print sysroot`), copied to BENCH_DIR
#   b    scripts/bench_corpus.py: a deterministic game-server tree
#   b4   the same generator at 4x the files and bytes, run once (linearity)
#
# Per run: wall time (bash EPOCHREALTIME around the child), user and system
# CPU seconds and peak RSS (GNU time, i.e. wait4's rusage, which covers the
# child and every descendant it waited for; peak RSS is the largest single
# process), archive size. Outputs are deleted between runs, outside the timed
# region. Writes docs/bench/results.md, docs/bench/chart.png and the raw data
# in docs/bench/raw/ (not committed).
#
# Environment:
#   BENCH_REPS=5          repetitions on corpora a and b
#   BENCH_CORPORA="a b b4"  which corpora to run
#   BENCH_DIR=/dev/shm/wings-backup-bench   work directory (must be tmpfs)
#   BENCH_KEEP=0          1 keeps the corpora for the next run
#   WINGS_REPLICA_DIR     where the anchor wings-replica (a stand-in for Wings 1.11's
#                         backup engine, not part of this repository) is; by default
#                         ../shared/anchors/wings-replica beside the checkout
#
# Installs nothing: a missing tool is an error that names the package.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${BENCH_REPS:-5}
CORPORA=${BENCH_CORPORA:-a b b4}
WORK=${BENCH_DIR:-/dev/shm/wings-backup-bench}
KEEP=${BENCH_KEEP:-0}
REPLICA_DIR=${WINGS_REPLICA_DIR:-$ROOT/../shared/anchors/wings-replica}
OUT_DIR=$ROOT/docs/bench
RAW_DIR=$OUT_DIR/raw
# Cargo's output directory: $CARGO_TARGET_DIR (relative to the checkout) or target/.
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN_DIR=$TARGET_DIR/bench

die() {
	echo "bench: $*" >&2
	exit 1
}
log() { echo "bench: $*" >&2; }

# --- requirements -----------------------------------------------------------

need() { # command, what provides it
	command -v "$1" >/dev/null 2>&1 || die "'$1' is missing (install $2)"
}
check_tools() {
	((BASH_VERSINFO[0] >= 5)) || die "bash 5 or later is needed (for EPOCHREALTIME)"
	[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive integer, not '$REPS'"
	[[ -x /usr/bin/time ]] && /usr/bin/time --version 2>&1 | grep -q 'GNU' ||
		die "/usr/bin/time (GNU time) is missing (install Debian package 'time')"
	need pigz "Debian package 'pigz'"
	need gzip "Debian package 'gzip'"
	need tar "Debian package 'tar'"
	tar --version | head -1 | grep -q 'GNU tar' || die "tar is not GNU tar (install Debian package 'tar')"
	need python3 "Debian package 'python3'"
	python3 -c 'import matplotlib' 2>/dev/null ||
		die "python3 cannot import matplotlib (install it: 'pip install matplotlib' or Debian 'python3-matplotlib')"
	need cargo "the Rust toolchain (rustup)"
	need rustc "the Rust toolchain (rustup)"
	need go "Go (to build wings-replica; Debian package 'golang-go')"
	[[ -x $REPLICA_DIR/build.sh ]] || die "wings-replica not found in $REPLICA_DIR (set WINGS_REPLICA_DIR)"
	for c in $CORPORA; do
		[[ $c == a || $c == b || $c == b4 ]] || die "unknown corpus '$c' in BENCH_CORPORA (a, b, b4)"
	done
	mkdir -p "$WORK"
	[[ $(stat -f -c %T "$WORK") == tmpfs ]] ||
		die "$WORK is not on tmpfs: reading and writing a disk would be measured (set BENCH_DIR)"
}

# --- builds -------------------------------------------------------------------

# The bench executable's path, from cargo's JSON messages on stdin.
bench_executable() {
	python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "archive" and m.get("executable"):
        print(m["executable"])'
}

build() {
	mkdir -p "$BIN_DIR"
	log "building benches/archive.rs (release)"
	local exe
	exe=$(cd "$ROOT" && cargo build --release --bench archive --message-format=json-render-diagnostics |
		bench_executable) || die "building the bench binary failed"
	[[ -x $exe ]] || die "cargo did not report the bench executable"
	cp "$exe" "$BIN_DIR/archive"
	log "building benches/archive.rs without ISA-L (release, --no-default-features, target/pure)"
	exe=$(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR/pure cargo build --release --no-default-features \
		--bench archive --message-format=json-render-diagnostics | bench_executable) ||
		die "building the pure-Rust bench binary failed"
	[[ -x $exe ]] || die "cargo did not report the pure-Rust bench executable"
	cp "$exe" "$BIN_DIR/archive-pure"
	log "building wings-replica"
	"$REPLICA_DIR/build.sh" "$BIN_DIR/wings-replica" || die "building wings-replica failed"
	OURS=$BIN_DIR/archive
	OURS_PURE=$BIN_DIR/archive-pure
	REPLICA=$BIN_DIR/wings-replica
}

# --- corpora ------------------------------------------------------------------

prepare_corpus() { # name -> sets SRC
	local name=$1
	SRC=$WORK/$name
	case $name in
	a)
		local sysroot stamp
		sysroot=$(rustc --print sysroot)
		stamp="sysroot=$sysroot $(rustc -V)"
		if [[ ! -f $SRC.corpus || $(cat "$SRC.corpus") != "$stamp" ]]; then
			log "copying $sysroot to $SRC"
			rm -rf "$SRC" "$SRC.corpus"
			mkdir -p "$SRC"
			cp -a "$sysroot/." "$SRC/"
			echo "$stamp" >"$SRC.corpus"
		fi
		;;
	b) python3 "$ROOT/scripts/bench_corpus.py" "$SRC" --scale 1 >&2 ;;
	b4) python3 "$ROOT/scripts/bench_corpus.py" "$SRC" --scale 4 >&2 ;;
	esac
	read -r CORPUS_FILES CORPUS_BYTES < <(find "$SRC" -type f -printf '%s\n' |
		awk '{n++; s+=$1} END {printf "%d %.0f\n", n, s}')
	CORPUS_DIRS=$(find "$SRC" -type d | wc -l)
	# The file a single-file restore takes back: the last, in name order, of
	# those between 512 KiB and 4 MiB (so it lies deep in the archive).
	ONE_PATH=$(find "$SRC" -type f -size +512k -size -4M -printf '%P\n' | LC_ALL=C sort | tail -1)
	[[ -n $ONE_PATH ]] || die "corpus $name has no file of 512 KiB to 4 MiB for the single-file restore"
}

drop_corpus() {
	[[ $KEEP == 1 ]] || rm -rf "${WORK:?}/$1" "$WORK/$1.corpus"
}

# Enough memory for corpus b4? Its tree takes about 4.8 GiB of tmpfs (small
# files fill whole pages), an archive up to 4 GiB, a restored copy 4.8 GiB.
B4_NEED_GIB=14
room_for_b4() {
	local avail_kb need_kb=$((B4_NEED_GIB * 1024 * 1024))
	avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
	[[ -f $WORK/b4.corpus ]] && need_kb=$((need_kb - 5 * 1024 * 1024))
	((avail_kb > need_kb))
}

# --- measuring ------------------------------------------------------------------

json_str() { # a JSON string literal
	local s=${1//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

micros() { # EPOCHREALTIME -> integer microseconds
	local t=$1
	echo $((10#${t%.*} * 1000000 + 10#${t#*.}))
}

# measure CORPUS OP TOOL REP SIZE_FILE -- COMMAND...: runs COMMAND once as a
# child process and appends one JSON line to $RUNS.
measure() {
	local corpus=$1 op=$2 tool=$3 rep=$4 size_file=$5
	shift 6
	local load t0 t1 user sys rss size=null
	read -r load _ </proc/loadavg
	t0=$EPOCHREALTIME
	if ! /usr/bin/time -f '%U %S %M' -o "$WORK/time.out" "$@" >"$WORK/step.out" 2>"$WORK/step.err"; then
		cat "$WORK/step.err" >&2
		die "$tool ($op, corpus $corpus, rep $rep) failed: $*"
	fi
	t1=$EPOCHREALTIME
	read -r user sys rss <"$WORK/time.out"
	[[ -n $size_file ]] && size=$(stat -c %s "$size_file")
	local wall_us=$(($(micros "$t1") - $(micros "$t0")))
	printf '{"corpus":"%s","op":"%s","tool":"%s","rep":%d,"wall_s":%d.%06d,"user_s":%s,"sys_s":%s,"max_rss_kb":%s,"size":%s,"load1":%s}\n' \
		"$corpus" "$op" "$tool" "$rep" $((wall_us / 1000000)) $((wall_us % 1000000)) \
		"$user" "$sys" "$rss" "$size" "$load" >>"$RUNS"
	log "$(printf '%-3s rep %d  %-18s %-13s %8.2f s  cpu %6.2f s  rss %6d KiB' \
		"$corpus" "$rep" "$op" "$tool" "$((wall_us / 1000000)).$(printf %06d $((wall_us % 1000000)))" \
		"$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" "$rss")"
}

# The restored tree must hold every file of the source, byte for byte in size.
check_restored() { # dest tool
	local files bytes
	read -r files bytes < <(find "$1" -type f -printf '%s\n' | awk '{n++; s+=$1} END {printf "%d %.0f\n", n, s}')
	[[ $files == "$CORPUS_FILES" && $bytes == "$CORPUS_BYTES" ]] ||
		die "$2 restored $files files / $bytes bytes, the source has $CORPUS_FILES / $CORPUS_BYTES"
}

# Archives kept from a create for the restores: $KEEP_DIR/<tool>.tar.gz.
kept() { echo "$KEEP_DIR/$1.tar.gz"; }

# step CORPUS REP OP:TOOL — one timed run, its setup and cleanup untimed.
step() {
	local corpus=$1 rep=$2 op=${3%%:*} tool=${3#*:}
	local out=$WORK/out/$tool.tar.gz dest=$WORK/dest
	mkdir -p "$WORK/out"
	case $op in
	drop) # the kept archive's last reader has run
		rm -f "$(kept "$tool")" "$(kept "$tool").index"
		return
		;;
	create_best_speed)
		case $tool in
		ours) measure "$corpus" "$op" "$tool" "$rep" "$out" -- "$OURS" create best_speed "$SRC" "$out" ;;
		ours-progress) measure "$corpus" "$op" "$tool" "$rep" "$out" -- \
			"$OURS" create best_speed "$SRC" "$out" --progress ;;
		ours-pure) measure "$corpus" "$op" "$tool" "$rep" "$out" -- "$OURS_PURE" create best_speed "$SRC" "$out" ;;
		wings-replica) measure "$corpus" "$op" "$tool" "$rep" "$out" -- "$REPLICA" create "$SRC" "$out" ;;
		pigz) measure "$corpus" "$op" "$tool" "$rep" "$out" -- \
			bash -c 'set -o pipefail; tar -cf - -C "$1" . | pigz -1 >"$2"' - "$SRC" "$out" ;;
		gnu-tar-gz) measure "$corpus" "$op" "$tool" "$rep" "$out" -- tar -czf "$out" -C "$SRC" . ;;
		*) die "no $op for $tool" ;;
		esac
		# The first archive of ours, ours-pure, wings-replica and GNU tar is kept for the restores
		# (ours with its index, for the second backups).
		if [[ $tool != pigz && $tool != ours-progress && ! -e $(kept "$tool") ]]; then
			mv "$out" "$(kept "$tool")"
			[[ -e $out.index ]] && mv "$out.index" "$(kept "$tool").index"
		else
			rm -f "$out"
		fi
		rm -f "$out.index"
		;;
	second_unchanged) # the tree as the kept archive saw it
		case $tool in
		ours) measure "$corpus" "$op" "$tool" "$rep" "$out" -- \
			"$OURS" create best_speed "$SRC" "$out" --reuse "$(kept ours)" ;;
		wings-replica) measure "$corpus" "$op" "$tool" "$rep" "$out" -- "$REPLICA" create "$SRC" "$out" ;;
		*) die "no $op for $tool" ;;
		esac
		rm -f "$out" "$out.index"
		;;
	second_changed) # $CHANGED, after $CHANGED_BASE was made of it
		case $tool in
		ours) measure "$corpus" "$op" "$tool" "$rep" "$out" -- \
			"$OURS" create best_speed "$CHANGED" "$out" --reuse "$CHANGED_BASE" ;;
		ours-fresh) measure "$corpus" "$op" "$tool" "$rep" "$out" -- \
			"$OURS" create best_speed "$CHANGED" "$out" ;;
		wings-replica) measure "$corpus" "$op" "$tool" "$rep" "$out" -- "$REPLICA" create "$CHANGED" "$out" ;;
		*) die "no $op for $tool" ;;
		esac
		# The reusing backup's tar stream must be the fresh one's.
		if [[ $tool == ours || $tool == ours-fresh ]]; then
			gzip -dc "$out" | sha1sum >"$WORK/$tool.tar.sha1"
			if [[ -f $WORK/ours.tar.sha1 && -f $WORK/ours-fresh.tar.sha1 ]]; then
				cmp -s "$WORK/ours.tar.sha1" "$WORK/ours-fresh.tar.sha1" ||
					die "the reusing backup's tar stream differs from a fresh one's (corpus $corpus)"
			fi
		fi
		rm -f "$out" "$out.index"
		;;
	create_none)
		case $tool in
		ours) measure "$corpus" "$op" "$tool" "$rep" "$out" -- "$OURS" create none "$SRC" "$out" ;;
		gnu-tar) measure "$corpus" "$op" "$tool" "$rep" "$out" -- tar -cf "$out" -C "$SRC" . ;;
		walk-pipe) measure "$corpus" "$op" "$tool" "$rep" "" -- \
			bash -c 'set -o pipefail; tar -cf - -C "$1" . | cat >/dev/null' - "$SRC" ;;
		walk-null) measure "$corpus" "$op" "$tool" "$rep" "" -- \
			bash -c 'tar -cf - -C "$1" . >/dev/null' - "$SRC" ;;
		*) die "no $op for $tool" ;;
		esac
		rm -f "$out"
		;;
	restore)
		local archive
		case $tool in
		ours-wr) archive=$(kept wings-replica) ;;
		*) archive=$(kept "$tool") ;;
		esac
		[[ -f $archive ]] || die "no archive to restore for $tool (step order)"
		rm -rf "$dest"
		mkdir "$dest"
		case $tool in
		ours | ours-wr) measure "$corpus" "$op" "$tool" "$rep" "" -- "$OURS" extract "$archive" "$dest" ;;
		ours-pure) measure "$corpus" "$op" "$tool" "$rep" "" -- "$OURS_PURE" extract "$archive" "$dest" ;;
		wings-replica) measure "$corpus" "$op" "$tool" "$rep" "" -- "$REPLICA" restore "$archive" "$dest" ;;
		gnu-tar-gz) measure "$corpus" "$op" "$tool" "$rep" "" -- tar -xzf "$archive" -C "$dest" ;;
		*) die "no $op for $tool" ;;
		esac
		((rep == 1)) && check_restored "$dest" "$tool"
		rm -rf "$dest"
		;;
	restore_one)
		# One file (ONE_PATH, picked per corpus) into an empty directory:
		# ours and GNU tar extract only it, wings-replica (which cannot)
		# restores its whole archive.
		rm -rf "$dest"
		mkdir "$dest"
		case $tool in
		ours) measure "$corpus" "$op" "$tool" "$rep" "" -- \
			"$OURS" extract "$(kept ours)" "$dest" --path "$ONE_PATH" ;;
		gnu-tar-gz) measure "$corpus" "$op" "$tool" "$rep" "" -- \
			tar -xzf "$(kept gnu-tar-gz)" -C "$dest" "./$ONE_PATH" ;;
		wings-replica) measure "$corpus" "$op" "$tool" "$rep" "" -- \
			"$REPLICA" restore "$(kept wings-replica)" "$dest" ;;
		*) die "no $op for $tool" ;;
		esac
		cmp -s "$dest/$ONE_PATH" "$SRC/$ONE_PATH" || die "$tool did not restore $ONE_PATH"
		rm -rf "$dest"
		;;
	*) die "unknown step $3" ;;
	esac
}

# Repetitions of corpora a and b: every step once per repetition, in this order.
INTERLEAVED=(
	create_best_speed:ours create_best_speed:wings-replica create_best_speed:pigz
	create_best_speed:gnu-tar-gz create_best_speed:ours-progress create_best_speed:ours-pure
	create_none:ours create_none:gnu-tar create_none:walk-pipe create_none:walk-null
	restore:ours restore:wings-replica restore:gnu-tar-gz restore:ours-wr restore:ours-pure
	restore_one:ours restore_one:gnu-tar-gz restore_one:wings-replica
	second_unchanged:ours second_unchanged:wings-replica
	second_changed:ours second_changed:wings-replica second_changed:ours-fresh
)
# Corpus b4, once: tool by tool, so that at most one kept archive and one
# restored tree exist at a time beside the (4x) corpus.
SEQUENTIAL=(
	create_best_speed:ours restore:ours drop:ours create_none:ours
	create_best_speed:ours-pure restore:ours-pure drop:ours-pure
	create_best_speed:wings-replica restore:wings-replica restore:ours-wr drop:wings-replica
	create_best_speed:pigz create_best_speed:gnu-tar-gz restore:gnu-tar-gz drop:gnu-tar-gz
	create_none:gnu-tar create_none:walk-pipe create_none:walk-null
)

run_corpus() { # name reps order steps...
	local name=$1 reps=$2 order=$3 rep s
	shift 3
	prepare_corpus "$name"
	log "corpus $name: $CORPUS_FILES files, $CORPUS_DIRS directories, $CORPUS_BYTES bytes; $reps repetition(s)"
	CORPUS_META+=("$(printf '"%s":{"files":%d,"dirs":%d,"bytes":%d,"reps":%d,"order":"%s"}' \
		"$name" "$CORPUS_FILES" "$CORPUS_DIRS" "$CORPUS_BYTES" "$reps" "$order")")
	KEEP_DIR=$WORK/keep
	rm -rf "$KEEP_DIR" "$WORK/out" "$WORK/dest"
	mkdir -p "$KEEP_DIR"
	[[ $order == interleaved ]] && prepare_changed "$name"
	for ((rep = 1; rep <= reps; rep++)); do
		for s in "$@"; do
			step "$name" "$rep" "$s"
		done
	done
	rm -rf "$KEEP_DIR" "$WORK/out" "$WORK/dest" "${CHANGED:-}" "${CHANGED_BASE:-}" "${CHANGED_BASE:-}.index"
	rm -f "$WORK/ours.tar.sha1" "$WORK/ours-fresh.tar.sha1"
	drop_corpus "$name"
}

# A copy of the corpus, its first backup by ours (untimed) and then the
# changes: what second_changed backs up again.
prepare_changed() { # name -> sets CHANGED, CHANGED_BASE
	CHANGED=$WORK/$1-changed
	CHANGED_BASE=$WORK/$1-changed-base.tar.gz
	rm -rf "$CHANGED" "$CHANGED_BASE" "$CHANGED_BASE.index"
	cp -a "$SRC" "$CHANGED"
	"$OURS" create best_speed "$CHANGED" "$CHANGED_BASE" >/dev/null
	log "corpus $1, changed copy: $(python3 "$ROOT/scripts/bench_change.py" "$CHANGED" --fraction 0.02)"
}

# --- the run --------------------------------------------------------------------

machine_meta() {
	local cpu git_rev
	cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	git_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
	[[ -n $(cd "$ROOT" && git --no-optional-locks status --porcelain -- src Cargo.toml 2>/dev/null) ]] && git_rev+="+dirty"
	printf '{"date":%s,"cores":%d,"cpu":%s,"kernel":%s,"mem_total_kb":%d,"reps":%d,"bench_dir":%s,' \
		"$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$(nproc)" "$(json_str "$cpu")" \
		"$(json_str "$(uname -sr)")" "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" "$REPS" \
		"$(json_str "$WORK")"
	printf '"versions":{"ours":%s,"ours-pure":%s,"rustc":%s,"go":%s,"wings-replica":%s,"tar":%s,"pigz":%s,"gzip":%s,"time":%s},' \
		"$(json_str "wings-backup $(awk -F'"' '/^version/ {print $2; exit}' "$ROOT/Cargo.toml") ($git_rev)")" \
		"$(json_str "the same, built with --no-default-features (deflate: zlib-rs, no ISA-L)")" \
		"$(json_str "$(rustc -V)")" "$(json_str "$(go version)")" \
		"$(json_str "$(awk '/klauspost|sabhiram/ && NF == 2 {printf "%s%s %s", sep, $1, $2; sep = ", "}' "$REPLICA_DIR/go.mod")")" \
		"$(json_str "$(tar --version | head -1)")" "$(json_str "$(pigz --version 2>&1 | head -1)")" \
		"$(json_str "$(gzip --version | head -1)")" "$(json_str "GNU time $(dpkg-query -W -f '${Version}' time 2>/dev/null || echo '?')")"
}

# On any exit, a failed one too, leave no gigabytes behind on tmpfs.
cleanup() {
	rm -rf "${WORK:?}/keep" "$WORK/out" "$WORK/dest" "$WORK"/*-changed "$WORK"/*-changed-base.tar.gz*
	rm -f "$WORK/time.out" "$WORK/step.out" "$WORK/step.err"
	if [[ $KEEP != 1 ]]; then
		for c in a b b4; do drop_corpus "$c"; done
		rmdir "$WORK" 2>/dev/null || true
	fi
}

main() {
	check_tools
	trap cleanup EXIT
	build
	mkdir -p "$RAW_DIR"
	local stamp
	stamp=$(date -u +%Y%m%dT%H%M%SZ)
	RUNS=$RAW_DIR/$stamp.runs.jsonl
	local meta=$RAW_DIR/$stamp.meta.json
	: >"$RUNS"
	local head load_start
	head=$(machine_meta)
	load_start=$(cut -d' ' -f1-3 /proc/loadavg)
	CORPUS_META=()
	local skipped=""
	for c in $CORPORA; do
		case $c in
		a | b) run_corpus "$c" "$REPS" interleaved "${INTERLEAVED[@]}" ;;
		b4)
			if room_for_b4; then
				run_corpus b4 1 "tool by tool" "${SEQUENTIAL[@]}"
			else
				skipped="not enough free memory for corpus b4 (it needs about $B4_NEED_GIB GiB)"
				log "skipping b4: $skipped"
			fi
			;;
		esac
	done
	local IFS=,
	printf '%s"load_start":%s,"load_end":%s,"b4_skipped":%s,"corpora":{%s}}\n' "$head" \
		"$(json_str "$load_start")" "$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")" \
		"$(json_str "$skipped")" "${CORPUS_META[*]}" >"$meta"
	unset IFS
	python3 "$ROOT/scripts/bench_report.py" "$meta" "$RUNS" "$OUT_DIR"
}

main "$@"
