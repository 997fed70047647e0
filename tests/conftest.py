# SPDX-License-Identifier: GPL-2.0
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

pytest_plugins = ["harness.plugin", "pytester"]
