package gateway

import "github.com/ds-blueprint/blueprint/internal/platform/httpx"

// addRoutes is the whole public API surface (docs/api.md), described in
// api/openapi.yaml, which TestOpenAPIContract holds it to.
func (g *Gateway) addRoutes(rt *httpx.Router) {
	rt.Handle("POST /auth/register", g.handleRegister())
	rt.Handle("POST /auth/login", g.handleLogin())
	rt.Handle("GET /.well-known/jwks.json", g.handleJWKS())
	rt.Handle("GET /openapi.yaml", g.handleOpenAPI())
	rt.Handle("GET /users/me", g.requireUser(g.handleMe()))
	rt.Handle("POST /orders", g.requireUser(g.handleCreateOrder()))
	rt.Handle("GET /orders", g.requireUser(g.handleListOrders()))
	rt.Handle("GET /orders/me", g.requireUser(g.handleListOrders()))
	rt.Handle("GET /orders/{id}", g.requireUser(g.handleGetOrder()))
	rt.Handle("GET /notifications", g.requireUser(g.handleListNotifications()))
}
