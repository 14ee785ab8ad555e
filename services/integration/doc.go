// Package integration holds the tests that run every service as its own
// process against real Apache Kafka and Apache Cassandra (make up). They
// read PARLEY_KAFKA_BROKERS and PARLEY_CASSANDRA_HOSTS; without them they
// skip, unless PARLEY_INTEGRATION=require (as in make test and CI), where a
// missing stack is a failure.
package integration
