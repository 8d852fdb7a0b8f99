"""A real one-machine SLURM for the job-script tests: munged, slurmctld and two
slurmd (nodes n1 and n2 on this host, so the 2-node scripts run as written).

`SlurmCluster.start()` installs `slurm-wlm munge` with apt if they are missing
(root only), writes a slurm.conf for this machine into a temporary directory
(no cgroups, no systemd, no accounting: proctrack/linuxproc, task/none), starts
the daemons in the foreground as child processes (-D), and waits for both nodes
to be idle. `stop()` ends them and removes nothing but what it started.
Everything runs as root (SlurmUser=root), as CI does.
"""
import os
import shutil
import socket
import subprocess
import time

NODES = ('n1', 'n2')
CPUS_PER_NODE = 4       # what the scripts ask for (2 ranks x 2 CPUs); slurmd trusts the
                        # config (SlurmdParameters=config_overrides), not the 2-core VM


def why_not():
    """None if a real SLURM can be started here, else the reason."""
    if os.geteuid() != 0:
        return 'not root: starting slurmctld/slurmd/munged needs root'
    if not all(shutil.which(c) for c in ('slurmctld', 'slurmd', 'munged', 'sbatch')):
        if not shutil.which('apt-get'):
            return 'SLURM is not installed and there is no apt-get to install it'
    return None


def install():
    if all(shutil.which(c) for c in ('slurmctld', 'slurmd', 'munged', 'sbatch', 'scontrol')):
        return
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run(['apt-get', 'update', '-q'], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(['apt-get', 'install', '-y', '-q', '--no-install-recommends',
                    'slurm-wlm', 'munge'], check=True, env=env, stdout=subprocess.DEVNULL)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class SlurmCluster(object):

    def __init__(self, workdir):
        self.dir = str(workdir)
        self.conf = os.path.join(self.dir, 'slurm.conf')
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs = []

    def write_conf(self):
        host = socket.gethostname()
        ports = {'ctld': _free_port()}
        for n in NODES:
            ports[n] = _free_port()
        os.makedirs(os.path.join(self.dir, 'state'), exist_ok=True)
        lines = [
            'ClusterName=pfn15test',
            'SlurmctldHost=%s(127.0.0.1)' % host,
            'SlurmctldPort=%d' % ports['ctld'],
            'SlurmUser=root',
            'SlurmdUser=root',
            'AuthType=auth/munge',
            'CredType=cred/munge',
            'AuthInfo=socket=%s' % os.path.join(self.dir, 'munge.socket'),
            'StateSaveLocation=%s' % os.path.join(self.dir, 'state'),
            'SlurmdSpoolDir=%s' % os.path.join(self.dir, 'spool-%n'),
            'SlurmctldPidFile=%s' % os.path.join(self.dir, 'slurmctld.pid'),
            'SlurmdPidFile=%s' % os.path.join(self.dir, 'slurmd-%n.pid'),
            'SlurmctldLogFile=%s' % os.path.join(self.dir, 'slurmctld.log'),
            'SlurmdLogFile=%s' % os.path.join(self.dir, 'slurmd-%n.log'),
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_CPU',
            'SchedulerType=sched/backfill',
            'SchedulerParameters=defer_batch=0',
            'ReturnToService=2',
            'MpiDefault=none',
            'SwitchType=switch/none',
            'JobCompType=jobcomp/none',
            'AccountingStorageType=accounting_storage/none',
            'JobAcctGatherType=jobacct_gather/none',
            'SlurmdParameters=config_overrides',
            'SlurmctldTimeout=30',
            'SlurmdTimeout=60',
            'InactiveLimit=0',
            'KillWait=10',
            'MinJobAge=600',
            'JobRequeue=1',
        ]
        for n in NODES:
            lines.append('NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 Port=%d CPUs=%d '
                         'RealMemory=1000 State=UNKNOWN' % (n, host, ports[n], CPUS_PER_NODE))
        lines.append('PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP'
                     % ','.join(NODES))
        with open(self.conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def _daemon(self, args, log):
        out = open(os.path.join(self.dir, log), 'ab')
        p = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start(self, timeout=90):
        install()
        self.write_conf()
        key = os.path.join(self.dir, 'munge.key')
        with open(key, 'wb') as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self._daemon(['munged', '-F', '--force', '--key-file', key,
                      '--socket', os.path.join(self.dir, 'munge.socket'),
                      '--pid-file', os.path.join(self.dir, 'munged.pid'),
                      '--log-file', os.path.join(self.dir, 'munged.log'),
                      '--seed-file', os.path.join(self.dir, 'munged.seed')], 'munged.out')
        self._wait(lambda: os.path.exists(os.path.join(self.dir, 'munge.socket')), 20,
                   'munged never opened its socket')
        self._daemon(['slurmctld', '-D', '-i', '-f', self.conf], 'slurmctld.out')
        for n in NODES:
            self._daemon(['slurmd', '-D', '-N', n, '-f', self.conf], 'slurmd-%s.out' % n)
        self._wait(self._nodes_idle, timeout, 'the nodes never became idle')
        return self

    def _nodes_idle(self):
        r = self.run(['sinfo', '-h', '-N', '-o', '%N %t'], check=False)
        states = dict(l.split() for l in r.stdout.splitlines() if len(l.split()) == 2)
        return all(states.get(n) == 'idle' for n in NODES)

    def _wait(self, ready, timeout, what):
        t0 = time.time()
        while not ready():
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError('%s: %s exited (%s)\n%s' % (what, p.args[0], p.returncode,
                                                                   self.logs()))
            if time.time() - t0 > timeout:
                raise RuntimeError('%s within %d s\n%s' % (what, timeout, self.logs()))
            time.sleep(0.2)

    def logs(self, tail=3000):
        text = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(('.log', '.out')):
                with open(os.path.join(self.dir, name), errors='replace') as f:
                    text.append('== %s\n%s' % (name, f.read()[-tail:]))
        return '\n'.join(text)

    def run(self, args, check=True, **kw):
        r = subprocess.run(args, env=kw.pop('env', self.env), capture_output=True, text=True,
                           **kw)
        if check and r.returncode:
            raise RuntimeError('%s: exit %d: %s%s' % (' '.join(args), r.returncode, r.stdout,
                                                      r.stderr))
        return r

    def job(self, job_id):
        """scontrol show job as a dict (the last value of each key)."""
        r = self.run(['scontrol', '-o', 'show', 'job', str(job_id)], check=False)
        out = {}
        for item in r.stdout.split():
            if '=' in item:
                k, v = item.split('=', 1)
                out[k] = v
        return out

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
