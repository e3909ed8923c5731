#!/bin/bash
# Batch script of the wiki's first recipe (reverse connection over an ssh tunnel): pvserver on the
# job's node connects back to CLIENT_HOST:PORT, where `ssh -R` (with GatewayPorts) forwards to the
# ParaView client on the workstation. Submit with, for example,
#   sbatch -N1 -n2 -w node1 --export=ALL,PV_CLIENT_HOST=login,PV_SERVER_PORT=11111 recipe1-job.sh
#SBATCH --job-name=pvserver-reverse
#SBATCH --time=10
set -u
echo "job ${SLURM_JOB_ID:-?} on $(hostname): ${SLURM_NTASKS:-1} ranks -> ${PV_CLIENT_HOST:-login}:${PV_SERVER_PORT:-11111}"
exec mpiexec -np "${SLURM_NTASKS:-1}" pvserver --reverse-connection \
  --client-host="${PV_CLIENT_HOST:-login}" --server-port="${PV_SERVER_PORT:-11111}"
