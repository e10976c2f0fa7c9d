# tansu, a Kafka-protocol broker, for the tests and the benchmarks: built from crates.io
# once (into target/tools; it takes some minutes), with its in-memory storage only.
# Sourced by scripts/test.sh and bench/run.sh; sets TM_TEST_KAFKA_BROKER to the binary.
# Whoever starts a broker stops it by its PID.
TANSU_VERSION=0.6.0
provide_tansu() {
    local root="$PWD/target/tools/tansu"
    if ! "$root/bin/tansu" --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
        log "building the tansu $TANSU_VERSION Kafka broker from crates.io"
        cargo install --quiet --locked --root "$root" tansu --version "$TANSU_VERSION" \
            --no-default-features --features dynostore
    fi
    TM_TEST_KAFKA_BROKER="$root/bin/tansu"
}
