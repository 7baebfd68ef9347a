# bitmapist-server %postun: $1 is 0 after an erase, 1 after an upgrade (run
# from the old package once the new one is installed): restart the service so
# the new binary runs.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart bitmapist.service >/dev/null 2>&1 || :
	fi
fi
exit 0
