# cbos hook: append one Claude Code hook call to cbos's events file as ONE line, with ONE
# write(2), so lines from many concurrent claude processes never interleave.
#
# Claude runs it as (see cbos/hooks.py, hook_command):
#
#   /bin/sh -c "CBOS_EVENTS_FILE='/…/events.jsonl' command . '/…/cbos-hook.sh' >/dev/null 2>&1; exit 0"
#
# It is sourced, not executed: that saves one exec of /bin/sh per event. `command .` keeps a
# missing or broken script from stopping the calling shell, the redirections keep it silent,
# and `exit 0` makes the status 0 whatever happens (2 would block a PreToolUse tool call).
#
# The line:  {"ts": 1795318957.30, "cbos_session": "AUTH", "tmux_pane": "%3",
#             "claude_pid": "19909", "payload": <stdin verbatim, minus newlines and CRs>}
#
# Cost per event: the calling sh plus tr (reads stdin) and dd (the single write), started
# side by side in one pipeline. The environment checks and the clock are shell builtins;
# `date` runs about once a minute to calibrate the clock (see cbos_clock). Nothing here
# waits on a lock. Empty or garbage stdin (never sent by claude) gives a line that is not
# JSON, which readers skip.
#
# POSIX sh only (dash is the usual /bin/sh). All names start with cbos_ because the caller's
# shell is ours only for one event.

cbos_num() {
	# A non-negative decimal integer without leading zeros, short enough for $(( )).
	case $1 in
	0) return 0 ;;
	'' | 0* | *[!0-9]* | ????????????????*) return 1 ;;
	esac
	return 0
}

cbos_clock() {
	# Set cbos_ts to the epoch time with 2 decimals. /proc/uptime (CLOCK_BOOTTIME, 10 ms)
	# plus an offset to the real-time clock that `date` measured at most 60 s ago on this
	# boot, cached in "$cbos_f.clock" as "BOOT_ID OFFSET_CS UPTIME_S ok". Any doubt: `date`.
	cbos_ts=0 cbos_up= cbos_bid= cbos_kb= cbos_ko= cbos_ku= cbos_kok= cbos_upcs=
	IFS=' ' read -r cbos_up cbos_x </proc/uptime
	cbos_us=${cbos_up%.*} cbos_uc=${cbos_up#*.}
	case $cbos_uc in [0-9][0-9]) cbos_num "$cbos_us" && cbos_upcs=$((cbos_us * 100 + ${cbos_uc#0})) ;; esac
	if [ -n "$cbos_upcs" ]; then
		IFS= read -r cbos_bid </proc/sys/kernel/random/boot_id
		case $cbos_bid in '' | *[!0-9a-f-]*) cbos_bid= ;; esac
	fi
	if [ -n "$cbos_bid" ]; then
		IFS=' ' read -r cbos_kb cbos_ko cbos_ku cbos_kok <"$cbos_f.clock"
		# An offset of fewer than 11 digits (before 2001) is not one `date` gave us.
		if [ "$cbos_kok" = ok ] && [ "$cbos_kb" = "$cbos_bid" ] && cbos_num "$cbos_ko" \
			&& [ "${#cbos_ko}" -ge 11 ] && cbos_num "$cbos_ku" \
			&& [ "$cbos_us" -ge "$cbos_ku" ] && [ "$((cbos_us - cbos_ku))" -lt 60 ]; then
			cbos_x=$((cbos_ko + cbos_upcs))
			cbos_ts=$((cbos_x / 100)).$((cbos_x / 10 % 10))$((cbos_x % 10))
			return 0
		fi
	fi
	cbos_d=$(LC_ALL=C date +%s.%N)
	cbos_ds=${cbos_d%%.*}
	cbos_df=${cbos_d#"$cbos_ds"}
	cbos_num "$cbos_ds" || return 0
	case $cbos_df in
	.[0-9][0-9]*)
		cbos_df=${cbos_df#.}
		cbos_df=${cbos_df%"${cbos_df#??}"}
		;;
	*) cbos_df=00 ;;
	esac
	cbos_ts=$cbos_ds.$cbos_df
	if [ -n "$cbos_bid" ]; then
		printf '%s %s %s ok\n' "$cbos_bid" "$((cbos_ds * 100 + ${cbos_df#0} - cbos_upcs))" \
			"$cbos_us" >"$cbos_f.clock"
	fi
}

cbos_hook() {
	cbos_f=$CBOS_EVENTS_FILE
	cbos_dir=${cbos_f%/*}
	# Append only to a regular file we may write, or create one in a directory we may write;
	# never open a FIFO or device that took its place (that could block). Otherwise drain
	# stdin (so claude's write of the payload cannot fail) and record nothing.
	if [ -e "$cbos_f" ]; then
		[ -f "$cbos_f" ] && [ -w "$cbos_f" ] || cbos_f=
	else
		[ -d "$cbos_dir/" ] && [ -w "$cbos_dir/" ] || cbos_f=
	fi
	case $cbos_f in /*) ;; *)
		cat >/dev/null
		return 0
		;;
	esac

	# Only values that need no JSON escaping get through; anything else is recorded as "".
	case $CBOS_SESSION in *[!A-Za-z0-9_-]*) cbos_s= ;; *) cbos_s=$CBOS_SESSION ;; esac
	case $TMUX_PANE in %*[!0-9]* | %) cbos_t= ;; %*) cbos_t=$TMUX_PANE ;; *) cbos_t= ;; esac
	case $CLAUDE_PID in *[!0-9]*) cbos_c= ;; *) cbos_c=$CLAUDE_PID ;; esac

	umask 077
	cbos_clock

	# One pipeline: the prefix, then stdin verbatim minus its newlines and carriage returns
	# (JSON strings cannot hold them literally, so only whitespace between tokens goes),
	# then the closing brace and newline. dd collects all of it into one block
	# (iflag=fullblock, up to 64 MiB) and appends that block with one write(2) to a file
	# opened O_APPEND (a bigger payload, which Claude does not send, would take more than
	# one write). A shell `printf >>` or a plain `cat >>` writes a long line in pieces that
	# other writers' lines can land between. Reading stdin with the shell's own `read`
	# instead of tr saves a process (about 0.5 ms for 2 KB) but costs one read(2) per
	# byte: 30 ms for the 100 KB payloads that Read/Edit results bring, 0.3 s for 1 MB.
	# LC_ALL=C spares both programs loading the locale.
	{
		printf '{"ts": %s, "cbos_session": "%s", "tmux_pane": "%s", "claude_pid": "%s", "payload": ' \
			"$cbos_ts" "$cbos_s" "$cbos_t" "$cbos_c"
		LC_ALL=C tr -d '\r\n'
		printf '}\n'
	} | LC_ALL=C dd iflag=fullblock bs=64M oflag=append conv=notrunc status=none of="$cbos_f"
}

cbos_hook
