#!/usr/bin/env bash
# cbos tmux plugin: a key that opens the cbos control room in a popup, and #{cbos_status}
# for the status line. Load it with TPM (set -g @plugin ...) or with
#   run-shell "$(cbos plugin-path)"
# Silent when all goes well; never overrides a key binding the user made.

# Every option and its default, in one place.
default_option() {
	case "$1" in
	@cbos-key) echo "A" ;;
	@cbos-bin) command -v cbos 2>/dev/null || echo "cbos" ;;
	@cbos-popup-width) echo "90%" ;;
	@cbos-popup-height) echo "85%" ;;
	@cbos-notify) echo "on" ;;
	@cbos-notify-bell) echo "on" ;;
	@cbos-notify-desktop) echo "off" ;;
	*) echo "" ;;
	esac
}

get_tmux_option() {
	local value
	value="$(tmux show-option -gqv "$1")"
	if [ -n "$value" ]; then
		echo "$value"
	else
		default_option "$1"
	fi
}

# Single-quote a word for the sh that runs popup and #() commands.
shell_quote() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

bind_popup_key() {
	local key bin width height existing
	key="$(get_tmux_option @cbos-key)"
	bin="$(get_tmux_option @cbos-bin)"
	width="$(get_tmux_option @cbos-popup-width)"
	height="$(get_tmux_option @cbos-popup-height)"
	[ -n "$key" ] || return 0
	existing="$(tmux list-keys -T prefix "$key" 2>/dev/null)"
	# A binding that is not ours is the user's: leave it and say how to pick another key.
	if [ -n "$existing" ] && ! printf '%s' "$existing" | grep -q "cbos"; then
		tmux display-message "cbos: prefix $key is already bound; set @cbos-key to another key"
		return 0
	fi
	# display-popup expands formats only in -d and -T, so the command stays literal.
	tmux bind-key -T prefix "$key" display-popup -E -w "$width" -h "$height" \
		-d "#{pane_current_path}" -T " cbos " "$(shell_quote "$bin") --popup"
}

# Replace #{cbos_status} in status-left/right with a call to `cbos status`.
interpolate_status() {
	local option value bin command
	bin="$(get_tmux_option @cbos-bin)"
	command="#($(shell_quote "$bin") status)"
	for option in status-left status-right; do
		value="$(tmux show-option -gqv "$option")"
		case "$value" in
		*"#{cbos_status}"*)
			tmux set-option -gq "$option" "${value//\#\{cbos_status\}/$command}"
			;;
		esac
	done
}

export_notify_options() {
	# cbos reads these from tmux when it runs; exporting nothing else keeps tmux's
	# environment clean.
	local name
	for name in @cbos-notify @cbos-notify-bell @cbos-notify-desktop; do
		if [ -z "$(tmux show-option -gqv "$name")" ]; then
			tmux set-option -gq "$name" "$(default_option "$name")"
		fi
	done
}

main() {
	bind_popup_key
	interpolate_status
	export_notify_options
}
main
