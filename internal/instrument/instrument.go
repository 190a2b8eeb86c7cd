// Package instrument makes the OpenTelemetry observable instruments that
// the gateway's metrics read when they are collected, several on one meter
// with one error check, and registers the callback that observes them.
package instrument

import "go.opentelemetry.io/otel/metric"

// Builder makes observable instruments on one meter, each with a name, a
// unit and a description. It keeps the first error any of them met, which
// RegisterCallback and Err return.
type Builder struct {
	m   metric.Meter
	err error
}

// NewBuilder returns a Builder of instruments on m.
func NewBuilder(m metric.Meter) *Builder { return &Builder{m: m} }

// Int64Gauge makes an Int64ObservableGauge.
func (b *Builder) Int64Gauge(name, unit, desc string) metric.Int64ObservableGauge {
	g, err := b.m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.keep(err)
	return g
}

// Float64Gauge makes a Float64ObservableGauge.
func (b *Builder) Float64Gauge(name, unit, desc string) metric.Float64ObservableGauge {
	g, err := b.m.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.keep(err)
	return g
}

// Int64Counter makes an Int64ObservableCounter.
func (b *Builder) Int64Counter(name, unit, desc string) metric.Int64ObservableCounter {
	c, err := b.m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.keep(err)
	return c
}

func (b *Builder) keep(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Err is the first error met in making an instrument, nil when none was.
func (b *Builder) Err() error { return b.err }

// RegisterCallback registers f to observe the instruments when metrics
// are collected; when making one of them failed, it registers nothing and
// returns that error.
func (b *Builder) RegisterCallback(f metric.Callback, instruments ...metric.Observable) error {
	if b.err != nil {
		return b.err
	}
	_, err := b.m.RegisterCallback(f, instruments...)
	return err
}
