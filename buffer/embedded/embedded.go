// Package embedded runs NATS with JetStream inside the gateway's process,
// for `sluice serve` without --nats-url, `sluice dev`, and tests.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config describes an in-process NATS server with JetStream.
type Config struct {
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// MaxPayload is the largest message the server accepts, in bytes.
	// Zero means 8 MiB, enough for a 1 MiB payload and its headers with room
	// to raise the per-function limit.
	MaxPayload int32
	// Listen makes the server accept TCP clients on 127.0.0.1 on a random
	// port; by default it accepts only in-process connections.
	Listen bool
	// MaxStore bounds JetStream's file storage, in bytes. Zero means the
	// server's default (most of the disk's free space). Sluice's stores
	// reserve their limits against it when they are made.
	MaxStore int64
	// NoSyncAlways turns off the fsync before each acknowledgement: the
	// server then flushes every two minutes, and an OS crash or power loss
	// can lose acknowledged jobs.
	NoSyncAlways bool
}

// Server is a running in-process NATS server with JetStream.
type Server struct {
	srv *server.Server
}

// Start starts an in-process NATS server with JetStream on file
// storage, flushing to disk before every acknowledgement unless told not to.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("buffer: embedded server needs a store directory")
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = 8 << 20
	}
	opts := &server.Options{
		ServerName:        "sluice-embedded",
		JetStream:         true,
		StoreDir:          cfg.StoreDir,
		SyncAlways:        !cfg.NoSyncAlways,
		MaxPayload:        cfg.MaxPayload,
		JetStreamMaxStore: cfg.MaxStore, // zero: the server's default
		DontListen:        !cfg.Listen,
		Host:              "127.0.0.1",
		Port:              -1,
		NoSigs:            true,
		NoLog:             true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("buffer: embedded server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("buffer: embedded server did not become ready in 10s")
	}
	return &Server{srv: srv}, nil
}

// Connect opens a client connection to the embedded server.
func (e *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(e.srv), nats.Name("sluice")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("buffer: connect to embedded server: %w", err)
	}
	return nc, nil
}

// ClientURL is the server's TCP address, when it was started with Listen.
func (e *Server) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it has stopped.
func (e *Server) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
