# SPDX-License-Identifier: GPL-2.0
#
# Sphinx configuration for virtio-scsi-rs's Documentation/ (`make htmldocs`).
# Kept minimal: no extensions beyond Sphinx's own, so that any Sphinx that
# builds the kernel's documentation builds this.

import os

project = "virtio-scsi-rs"
copyright = "The virtio-scsi-rs authors"
author = "The virtio-scsi-rs authors"

# The package version has one source, the file VERSION (modinfo, DKMS).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "VERSION")) as f:
    release = f.read().strip()
version = release

master_doc = "index"
source_suffix = ".rst"
exclude_patterns = ["output"]
highlight_language = "none"
html_theme = "alabaster"
html_title = "virtio-scsi-rs " + release
