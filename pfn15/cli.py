"""What every command-line tool of pfn15 shares: one line and exit 2 for a user error.

`ArgumentParser` raises `errors.UserError` instead of printing the usage and
exiting, suggests the nearest choice or option, and prints --help once under
mpiexec (rank 0). `run(main, prog)` is each tool's `if __name__ == '__main__'`:
any `errors.Stop` becomes its one line (rank 0) and its exit status, a path
the user gave that cannot be read or written becomes a user error, Ctrl-C
becomes exit 130. Standard library only.
"""
import argparse
import sys

from pfn15 import errors

KEYS_HELP = ('config keys: the sections and their keys, with defaults, choices and\n'
             'bounds, are in pfn15/config.py; `python -m pfn15.train --show-config\n'
             'CONFIG [key=value ...]` prints the config a command line resolves to.')


TOOL_EXIT_CODES = ('exit status:\n'
                   '  0    done\n'
                   '  2    user error (command line, config, a file given): one line saying what\n'
                   '  130  interrupted (Ctrl-C)')


def epilog(keys=False, tool=False):
    """--help's closing text: the exit statuses (a tool's three, or the training's
    table) and, with `keys`, where the config keys are."""
    text = TOOL_EXIT_CODES if tool else 'exit status:\n' + errors.exit_codes_text()
    return text + ('\n\n' + KEYS_HELP if keys else '')


class ArgumentParser(argparse.ArgumentParser):

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        if message.startswith('unrecognized arguments: '):
            words = message[len('unrecognized arguments: '):].split()
            options = [o for o in self._option_string_actions if o.startswith('--')]
            hints = [errors.did_you_mean(w.split('=')[0], options)
                     for w in words if w.startswith('-')]
            message += ''.join(h for h in hints if h)
        raise errors.UserError('%s (see %s --help)' % (message, self.prog))

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, 'invalid choice: %r%s; choose from %s' % (
                value, errors.did_you_mean(value, choices), ', '.join(choices)))

    def print_help(self, file=None):
        if errors.launcher_rank() == 0:
            super().print_help(file)

    def exit(self, status=0, message=None):
        if message and errors.launcher_rank() == 0:
            sys.stderr.write(message)
        sys.exit(status)


def run(main, prog, argv=None):
    """Call `main(argv)` and return the exit status it ends with (see the module docstring)."""
    try:
        return main(argv)
    except errors.Stop as e:
        return errors.say(e, prog=prog)
    except OSError as e:
        if e.filename is None:
            raise
        return errors.say(errors.UserError('%s: %s' % (e.filename, e.strerror or e)), prog=prog)
    except KeyboardInterrupt:
        errors.say(errors.Error('interrupted'), prog=prog)
        return errors.INTERRUPTED
