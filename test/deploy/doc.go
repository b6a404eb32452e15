// Package deploy tests the Helm chart of deploy/helm: rendered with the Helm
// SDK (no cluster) and every object decoded strictly into its Kubernetes
// API type; the connections its NetworkPolicies allow, against the trust
// lists in the services' code; and the configuration it gives the pods,
// booted as processes of the binary (package boot) with the public API flow
// through them.
//
// It is a module of its own, so that Helm and the Kubernetes modules stay
// out of the repository's module:
//
//	cd test/deploy && go test ./...
//
// BLUEPRINT_TEST_POSTGRES_URL boots values-production.yaml too (a
// PostgreSQL database per service, three NATS servers), with the gateway's
// Redis at BLUEPRINT_TEST_REDIS_URL when set. BLUEPRINT_TEST_NATS_CHART names
// the official NATS chart (helm pull nats/nats --untar) to render with
// deploy/helm/nats-values.yaml. Without them those tests skip and say so.
package deploy
