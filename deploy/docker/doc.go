// Package docker holds Blueprint's container image: Dockerfile (built by
// build.sh from a binary compiled here, so nothing is pulled) and the tests
// that keep it in line with the repository's root Dockerfile, which builds
// the same image from source. docs/deploy.md says how to use it.
package docker
