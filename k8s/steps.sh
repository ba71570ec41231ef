# Messages and timed steps of the k8s scripts (sourced, not run): k8s/deploy.sh, and k8s/local/ via lib.sh.

say() { printf '[k8s] %s\n' "$*" >&2; }
die() { printf '[k8s] error: %s\n' "$*" >&2; exit 1; }

# step NAME COMMAND...: run one step and print how many seconds it took.
step() {
    local name=$1 started=$SECONDS
    shift
    say "$name ..."
    "$@"
    say "$name: $((SECONDS - started))s"
}
