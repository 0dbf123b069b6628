#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster (Debian packages) with accounting and fake GPUs,
# as root, without systemd: munge -> MariaDB -> slurmdbd -> accounts -> slurmctld -> slurmd.
# Idempotent: daemons already running are left alone. Used by .ci/slurm_demo.sh.
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v mariadbd >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        munge mariadb-server slurmctld slurmd slurmdbd slurm-client >/dev/null
fi

NODE=$(hostname -s)
read -r CPUS SOCKETS CORES THREADS MEMORY < <(slurmd -C | awk '
    {for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }}
    END {print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"]}')
MEMORY=$((MEMORY * 9 / 10))  # a little below what the node reports
# Fake GPUs (counted, no device): one per CPU, at most 4, so that training jobs (one CPU per
# GPU) run side by side as they would on a GPU node instead of queueing one at a time.
GPUS=$(( CPUS < 4 ? CPUS : 4 ))
# SLURM counts a GPU per device file; character devices that every machine has stand in.
GPU_FILES=$(echo /dev/null /dev/zero /dev/full /dev/urandom | cut -d' ' -f1-"$GPUS" | tr ' ' ,)

wait_for() {  # wait_for "description" command...
    local what=$1; shift
    for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "timed out waiting for $what" >&2; return 1
}

# munge: authentication between the daemons.
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
wait_for munge sh -c "munge -n | unmunge"

# MariaDB for the accounting database (run directly: mysqld_safe would restart it).
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! pgrep -x mariadbd >/dev/null; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    (su -s /bin/sh mysql -c "/usr/sbin/mariadbd --skip-networking=0 --bind-address=127.0.0.1" \
        >/var/log/mariadbd.log 2>&1 &)
fi
wait_for mariadb mariadb -e "select 1"
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

mkdir -p /etc/slurm /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown -R slurm:slurm /run/slurm /var/spool/slurmctld /var/log/slurm

cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf

cat >/etc/slurm/slurm.conf <<CONF
ClusterName=neuroadapt
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
ReturnToService=2
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} Sockets=${SOCKETS} CoresPerSocket=${CORES} ThreadsPerCore=${THREADS} RealMemory=${MEMORY} Gres=gpu:fake:${GPUS} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
cat >/etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${NODE} Name=gpu Type=fake File=${GPU_FILES}
CONF

pgrep -x slurmdbd >/dev/null || slurmdbd
wait_for slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster neuroadapt >/dev/null 2>&1 || true
sacctmgr -i add account neuroadapt Cluster=neuroadapt >/dev/null 2>&1 || true
sacctmgr -i add user root Account=neuroadapt >/dev/null 2>&1 || true

if pgrep -x slurmctld >/dev/null; then scontrol reconfigure; else slurmctld; fi
wait_for slurmctld scontrol ping
pgrep -x slurmd >/dev/null || slurmd
wait_for "node ${NODE} idle" sh -c "sinfo -h -N -o '%t' | grep -qx idle"
sinfo
