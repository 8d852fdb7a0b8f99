"""The README and docs/: short README, every relative link resolves, and
nothing in the repository points at a file outside it."""
import os
import re
import subprocess

import pytest

from helpers import ROOT

# Pages linked before the branch that writes them is merged. An entry must go
# once its page exists (the test below fails then, so the list cannot rot).
PENDING = set()

_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
_URL = re.compile(r'\b[a-z][a-z0-9+.-]*://\S+')


def _tracked():
    out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split('\0') if p]


def _pages():
    pages = ['README.md']
    docs = os.path.join(ROOT, 'docs')
    pages += sorted('docs/' + f for f in os.listdir(docs) if f.endswith('.md'))
    return pages


def _text(rel):
    try:
        with open(os.path.join(ROOT, rel), encoding='utf-8') as f:
            return f.read()
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return None


def _slug(heading):
    """GitHub's anchor for a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r'[^\w\- ]', '', s)
    return s.replace(' ', '-')


def _anchors(text):
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r'^#+\s+(.*)$', text, flags=re.M)}


def _inside(path):
    path = os.path.realpath(path)
    return path == ROOT or path.startswith(ROOT + os.sep)


def test_readme_is_short():
    with open(os.path.join(ROOT, 'README.md')) as f:
        n = sum(1 for _ in f)
    assert n <= 250, 'README.md has %d lines; the bar is 250 (details go in docs/)' % n


def test_docs_are_pages_by_topic():
    have = set(_pages())
    for page in ('recipe', 'faults', 'clusters', 'gpus', 'performance', 'plan', 'report'):
        assert 'docs/%s.md' % page in have


@pytest.mark.parametrize('page', _pages())
def test_every_relative_link_resolves(page):
    text = _text(page)
    bad = []
    for target in _LINK.findall(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', target):   # http:, mailto:
            continue
        path, _, anchor = target.partition('#')
        if not path:
            dest = page
        else:
            dest = os.path.normpath(os.path.join(os.path.dirname(page), path))
        if not _inside(os.path.join(ROOT, dest)):
            bad.append('%s: leaves the repository' % target)
            continue
        if dest in PENDING:
            continue
        if not os.path.exists(os.path.join(ROOT, dest)):
            bad.append('%s: %s does not exist' % (target, dest))
        elif anchor and dest.endswith('.md') and anchor not in _anchors(_text(dest)):
            bad.append('%s: %s has no heading #%s' % (target, dest, anchor))
    assert not bad, '%s: broken links:\n  %s' % (page, '\n  '.join(bad))


def test_pending_pages_are_still_pending():
    landed = [p for p in PENDING if os.path.exists(os.path.join(ROOT, p))]
    assert not landed, ('%s exist now: drop them from PENDING in tests/unit/test_docs.py so '
                        'their links are checked' % ', '.join(landed))


def test_nothing_refers_to_a_file_outside_the_repository():
    files = set(_tracked())
    names = {os.path.basename(f) for f in files}
    bad = []
    for rel in sorted(files - {'tests/unit/test_docs.py'}):   # its examples are bad on purpose
        text = _text(rel)
        if text is None:
            continue
        text = _URL.sub('', text)
        for i, line in enumerate(text.split('\n'), 1):
            where = '%s:%d' % (rel, i)
            # A relative path upwards must land on something of ours
            # (../shared/NOTES.md does not).
            for m in re.finditer(r'(?<![\w.])((?:\.\./)+)([\w.-]+)', line):
                dest = os.path.join(ROOT, os.path.dirname(rel), m.group(1) + m.group(2))
                if not (_inside(dest) and os.path.exists(dest)):
                    bad.append('%s: %s' % (where, m.group(0)))
            # The workplace's own directories.
            for m in re.finditer(r'/work/(?:shared|main|wt)\b\S*', line):
                bad.append('%s: %s' % (where, m.group(0)))
            # A Markdown file named as a source must be one of ours.
            for m in re.finditer(r'(?<![\w/.-])([\w./-]*[A-Za-z0-9_-]\.md)\b(?!\()', line):
                name = m.group(1)
                if name.startswith(('OUT', 'results/', '$')) or name.isupper():
                    continue   # an output path, not a source
                if name in files or os.path.basename(name) in names or \
                        os.path.normpath(os.path.join(os.path.dirname(rel), name)) in files or \
                        name in PENDING:
                    continue
                bad.append('%s: %s (not in the repository)' % (where, name))
    assert not bad, 'references to files outside the repository:\n  ' + '\n  '.join(bad)


def _code_exit_statuses():
    """The exit statuses of pfn15/errors.py's table, the one place they live."""
    from pfn15 import errors
    return {status for status, _ in errors.EXIT_CODES}


def test_no_exit_status_is_written_outside_errors_py():
    """Every stop takes its status from pfn15/errors.py: no literal status elsewhere."""
    pattern = re.compile(r'EXIT_\w+ = \d+|fail\([^,()]+, \d+|Abort\(\d+\)|sys\.exit\(\d+\)'
                         r'|^\s+status = \d+$|return [2-5]  *#|^\s+return 130$', re.M)
    bad = []
    for dirpath, _, names in os.walk(os.path.join(ROOT, 'pfn15')):
        for n in names:
            path = os.path.join(dirpath, n)
            if n.endswith('.py') and path != os.path.join(ROOT, 'pfn15', 'errors.py'):
                with open(path) as f:
                    bad += ['%s: %s' % (os.path.relpath(path, ROOT), m.group(0).strip())
                            for m in pattern.finditer(f.read())]
    assert not bad, bad


def test_readme_lists_the_exit_statuses_the_code_uses():
    text = _text('README.md')
    section = text.split('\n## Exit codes\n', 1)[1].split('\n## ', 1)[0]
    listed = [int(n) for n in re.findall(r'^- \*\*(\d+)\*\*', section, flags=re.M)]
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == _code_exit_statuses(), (sorted(listed), sorted(_code_exit_statuses()))
