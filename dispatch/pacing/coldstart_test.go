package pacing

import (
	"testing"
	"time"
)

func TestColdStartsByLatency(t *testing.T) {
	var c ColdStarts
	for range 10 {
		c.Observe(100*time.Millisecond, nil)
	}
	if !c.Observe(600*time.Millisecond, nil) {
		t.Error("600ms against a 100ms baseline was not judged cold")
	}
	if c.Observe(150*time.Millisecond, nil) {
		t.Error("150ms against a 100ms baseline was judged cold")
	}
	yes, no := true, false
	if !c.Observe(time.Millisecond, &yes) || c.Observe(time.Hour, &no) {
		t.Error("the platform's word did not win over latency")
	}
	if cold, warm := c.Take(); cold != 2 || warm != 12 {
		t.Errorf("counts = %d cold, %d warm; want 2, 12", cold, warm)
	}
}
