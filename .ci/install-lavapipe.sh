#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) from bookworm-backports: Mesa 25 runs our WGSL
# 3-4x faster than bookworm's stock Mesa 22.3 on the same cores.
set -euo pipefail

# The archive URI that serves the machine's own `bookworm` suite, read from its apt sources (deb822
# `*.sources` files and classic `sources.list` lines), so backports come from the same mirror.
# FSNN_APT_DIR (default /etc/apt) lets the lookup be tried on other source lists.
apt_dir=${FSNN_APT_DIR:-/etc/apt}
archive_uri() {
  {
    for f in "$apt_dir"/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      # One stanza per blank-line-separated block; print its URIs when its Suites list bookworm.
      awk 'BEGIN { RS = ""; FS = "\n" }
           {
             uris = ""; hit = 0
             for (i = 1; i <= NF; i++) {
               if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); uris = $i }
               if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) hit = 1
             }
             if (hit && uris != "") { split(uris, u, /[ \t]+/); print u[1] }
           }' "$f"
    done
    for f in "$apt_dir"/sources.list "$apt_dir"/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      # deb [options] URI SUITE COMPONENTS...
      sed -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2 }'
    done
  } | head -n1
}

if [ -f /etc/os-release ] && grep -q 'VERSION_CODENAME=bookworm' /etc/os-release; then
  src=/etc/apt/sources.list.d/fsnn-bookworm-backports.sources
  if [ ! -f "$src" ]; then
    uri=$(archive_uri)
    if [ -z "$uri" ]; then
      echo "install-lavapipe: no apt source for the bookworm suite found in $apt_dir/sources.list" \
           "or $apt_dir/sources.list.d/; add the machine's Debian archive there first" >&2
      exit 1
    fi
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" >"$src"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
ls /usr/share/vulkan/icd.d/ | grep -q lvp || { echo "lavapipe ICD not found after install" >&2; exit 1; }
