package dispatch

import (
	"testing"
	"time"
)

func TestColdStartsByLatency(t *testing.T) {
	var c coldStarts
	for range 10 {
		c.observe(100*time.Millisecond, nil)
	}
	if !c.observe(600*time.Millisecond, nil) {
		t.Error("600ms against a 100ms baseline was not judged cold")
	}
	if c.observe(150*time.Millisecond, nil) {
		t.Error("150ms against a 100ms baseline was judged cold")
	}
	yes, no := true, false
	if !c.observe(time.Millisecond, &yes) || c.observe(time.Hour, &no) {
		t.Error("the platform's word did not win over latency")
	}
	if cold, warm := c.take(); cold != 2 || warm != 12 {
		t.Errorf("counts = %d cold, %d warm; want 2, 12", cold, warm)
	}
}
