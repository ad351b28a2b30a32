#!/usr/bin/env bash
# The main job on the example policies, end to end, on a throwaway network: installs what
# is needed (scripts/setup.sh), builds two network namespaces joined by a veth pair
# (never the host's interfaces), then validates, plans, applies, exercises and shows the
# example policies in policies/, and tears everything down again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null

BP=.venv/bin/bpfpolicy
NS=bpfpolicy-demo          # the protected side: veth-demo0 (policies attach here)
PEER=bpfpolicy-demo-peer   # the traffic source:  veth-demo1
WORK=$(mktemp -d /tmp/bpfpolicy-demo.XXXXXX)
export BPFPOLICY_BPFFS_ROOT=/sys/fs/bpf/bpfpolicy-demo
export BPFPOLICY_STATE_DIR=$WORK/state

cleanup() {
  [[ -n ${LISTENER:-} ]] && kill "$LISTENER" 2>/dev/null
  $BP destroy --config "$WORK/config.yaml" --allow-empty >/dev/null 2>&1 || true
  ip netns del $NS 2>/dev/null || true
  ip netns del $PEER 2>/dev/null || true
  rm -rf "$WORK" "$BPFPOLICY_BPFFS_ROOT"
}
trap cleanup EXIT
cleanup 2>/dev/null || true
mkdir -p "$WORK"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "throwaway network: $NS (veth-demo0 10.77.0.1) <-> $PEER (veth-demo1 10.77.0.2, 192.0.2.1, 192.0.2.10)"
ip netns add $NS
ip netns add $PEER
ip link add veth-demo0 netns $NS type veth peer name veth-demo1 netns $PEER
ip -n $NS addr add 10.77.0.1/24 dev veth-demo0
ip -n $NS addr add 192.0.2.254/24 dev veth-demo0
ip -n $PEER addr add 10.77.0.2/24 dev veth-demo1
ip -n $PEER addr add 192.0.2.1/24 dev veth-demo1
ip -n $PEER addr add 192.0.2.10/24 dev veth-demo1
for ns in $NS $PEER; do ip -n $ns link set lo up; done
ip -n $NS link set veth-demo0 up
ip -n $PEER link set veth-demo1 up
# A service on the protected side: TCP 22 and 80 listeners (answer and close).
ip netns exec $NS .venv/bin/python scripts/demo_listen.py 22 80 8080 >/dev/null 2>&1 &
LISTENER=$!
sleep 0.5

cat > "$WORK/config.yaml" <<YAML
source: {directory: $PWD/policies}
bpffsRoot: $BPFPOLICY_BPFFS_ROOT
stateDir: $BPFPOLICY_STATE_DIR
endpoints:
  - name: demo
    labels: {app: demo}
    interfaces: [{name: veth-demo0, netns: $NS}]
    addresses: [10.77.0.1, "fd00:77::1"]
YAML

step "bpfpolicy validate policies/"
$BP validate policies/

step "bpfpolicy plan (exit 1 = changes pending)"
$BP plan --config "$WORK/config.yaml" policies/ || true

step "bpfpolicy apply"
$BP apply --config "$WORK/config.yaml" policies/

probe() {  # probe SRC PROTO PORT: try from the peer namespace with a given source address
  ip netns exec $PEER .venv/bin/python scripts/demo_probe.py "$@"
}
step "traffic from the peer namespace"
probe 10.77.0.2 tcp 22    # allowed: 10/8 to :22 (NetworkPolicy)
probe 10.77.0.2 tcp 8080  # refused: default deny once the policy selects the endpoint
probe 192.0.2.1 tcp 22    # dropped at XDP: 192.0.2.0/24 is on the blocklist (bogons)
probe 192.0.2.10 icmp 0   # the allow exception passes XDP; ping is allowed by the policy
probe 10.77.0.2 icmp 0    # ping allowed (EchoRequest)

step "seccomp: bpfpolicy exec --seccomp web-api"
$BP exec --seccomp web-api -- /bin/echo "echo runs under the web-api profile"
if $BP exec --seccomp web-api -- /usr/bin/unshare --user true 2>/dev/null; then
  echo "unshare succeeded (allowed by this profile)"
else
  echo "unshare refused by the web-api profile (exit $?)"
fi

step "bpfpolicy status"
$BP status --config "$WORK/config.yaml"

step "a no-op reconcile (exit 0 = nothing to do)"
$BP plan --config "$WORK/config.yaml" policies/ && echo "plan: converged"

step "bpfpolicy destroy"
$BP destroy --config "$WORK/config.yaml" --allow-empty
