// Package compose holds Blueprint's Docker Compose deployment
// (compose.yaml, and compose.observability.yaml for the observability
// stack) and the test that runs it for real under a Docker engine: the
// stack brought up from the images of the run, the public API driven
// through the published port, then an orders container killed, orders cut
// off from NATS, orders scaled to three and everything restarted, each
// checked against the invariants of test/harness. docs/deploy.md explains
// the deployment.
package compose
