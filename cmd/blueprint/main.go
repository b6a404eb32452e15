// Command blueprint runs Blueprint: every service in one process by default,
// or the ones named by --target. See `blueprint help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // zone data for images with no /usr/share/zoneinfo

	_ "golang.org/x/crypto/x509roots/fallback" // CA roots for images with none (used only when the system has none)

	"github.com/ds-blueprint/blueprint/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second Ctrl-C kills at once
	err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blueprint:", err)
		os.Exit(app.ExitCode(err))
	}
}
