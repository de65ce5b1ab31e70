"""Unit tests of log parsing, failure patterns and the log analyzer."""
