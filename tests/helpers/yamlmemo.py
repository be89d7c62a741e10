"""A memo of `yaml.load` for the unit tests: the shipped reference data (catalog, directory,
offices, rule sets, policy) is read by hundreds of tests through the production loaders, and
PyYAML's pure-Python parser made that the largest cost of `tests/unit`.

Each distinct (text, Loader) is parsed once by the real `yaml.load`; later calls get a deep copy
of that result, so a caller that mutates what it loaded changes nothing for the next one. Errors
are never memoised: a malformed file raises the real parser's error every time. Only str/bytes
input is memoised (a file object is parsed as usual).
"""
from __future__ import annotations

import copy

import yaml

_MAX_ENTRIES = 512      # generated test files are small and many; the shipped ones are few


class YamlMemo:
    def __init__(self):
        self._real = None
        self._results: dict[tuple, object] = {}
        self.hits = self.misses = 0

    def load(self, stream, Loader):   # noqa: N803 - yaml.load's own parameter name
        if not isinstance(stream, (str, bytes)):
            return self._real(stream, Loader)
        key = (Loader, stream)
        if key in self._results:
            self.hits += 1
            return copy.deepcopy(self._results[key])
        self.misses += 1
        data = self._real(stream, Loader)
        if len(self._results) < _MAX_ENTRIES:
            self._results[key] = copy.deepcopy(data)
        return data

    def install(self) -> None:
        if self._real is None:
            self._real = yaml.load
            yaml.load = self.load        # yaml.safe_load and the loaders' callers look it up here

    def uninstall(self) -> None:
        if self._real is not None:
            yaml.load, self._real = self._real, None
