"""Unit tests of the web app: present in the tree, never shipped in an image."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "app"))

import main  # noqa: E402


class IndexTest(unittest.TestCase):
    def test_title(self):
        self.assertIn("broker-example mgmt-app", main.render_index())


if __name__ == "__main__":
    unittest.main()
