package app

import (
	"context"
	"log/slog"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/signin"
	"github.com/errandhq/errand/web"
)

// newPages is the approval pages (web): the REST API's service, refusals
// and metrics, and the sign-in's sessions.
func newPages(cfg *config.Config, svc *broker.Service, api *httpapi.Server, sm *signin.Manager, log *slog.Logger) (*web.Pages, error) {
	return web.New(web.Config{
		Service: svc, API: api, Sessions: sm, Viewer: sessionViewer,
		UserIssuers: cfg.UserIssuers(), AgentIssuers: cfg.AgentIssuers(), Logger: log,
	})
}

// sessionViewer is the signed-in person of a request, from the session
// the sign-in's middleware put in its context.
func sessionViewer(ctx context.Context) (web.Viewer, bool) {
	s, ok := signin.FromContext(ctx)
	if !ok {
		return web.Viewer{}, false
	}
	return web.Viewer{Principal: s.User, CSRF: s.CSRF}, true
}
