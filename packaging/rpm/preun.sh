# bitmapist-server %preun: $1 is 0 when the package is erased, 1 on an
# upgrade. Erasing stops the service (final checkpoint) and disables it; the
# data in /var/lib/bitmapist is kept (rpm has no purge; see the README).
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload disable --now bitmapist.socket bitmapist.service >/dev/null 2>&1 || :
fi
exit 0
