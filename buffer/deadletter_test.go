package buffer_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/deadletter"
)

// #19 item 18: a page of one tenant's dead letters costs reads in
// proportion to the page, however many letters other tenants have.
func TestDeadLetterPageReadsOnlyTheTenantsLetters(t *testing.T) {
	srv := buffertest.Start(t, "")
	nc := srv.Connect(t)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const others, page = 300, 2
	acme := buffertest.DeadLetters(t, q, "f", "acme", 3)
	buffertest.DeadLetters(t, q, "f", "bolt", others)
	acme = append(acme, buffertest.DeadLetters(t, q, "f", "acme", 2)...)

	var listed []string
	var from uint64
	for pages := 1; ; pages++ {
		before := nc.Stats()
		p, err := q.DeadLetters(t.Context(), "f", "acme", from, page, false)
		if err != nil {
			t.Fatal(err)
		}
		reads := nc.Stats().OutMsgs - before.OutMsgs
		t.Logf("page %d: %d letters, %d requests", pages, len(p.Letters), reads)
		if reads > page+3 {
			t.Errorf("page %d of %d of acme's letters took %d requests to the server; want at most %d, whatever bolt's %d letters", pages, page, reads, page+3, others)
		}
		for _, dl := range p.Letters {
			if dl.Job.Tenant != "acme" {
				t.Errorf("acme's page holds %s's job %s", dl.Job.Tenant, dl.Job.Id)
			}
			listed = append(listed, dl.Job.Id)
		}
		if from = p.Next; from == 0 {
			break
		}
	}
	if len(listed) != len(acme) {
		t.Errorf("listed %d of acme's letters, want %d", len(listed), len(acme))
	}
}

// A redrive of all requeues at most limit letters a call, one at a time,
// and says where to go on: the edge of a call's share.
func TestRedriveAllInBoundedCalls(t *testing.T) {
	for _, tc := range []struct {
		letters, limit int
		calls          []int // jobs each call requeues
	}{
		{0, 3, []int{0}},
		{1, 3, []int{1}},
		{3, 3, []int{3}}, // exactly a call's share: no call after it
		{4, 3, []int{3, 1}},
		{7, 3, []int{3, 3, 1}},
	} {
		t.Run(fmt.Sprintf("%d letters by %d", tc.letters, tc.limit), func(t *testing.T) {
			q := buffertest.Queue(t, buffer.Config{})
			ids := buffertest.DeadLetters(t, q, "f", "acme", tc.letters)
			others := buffertest.DeadLetters(t, q, "f", "bolt", 2)
			redriven := map[string]bool{}
			var from, until uint64
			for call, want := range tc.calls {
				page, err := q.RedriveAll(t.Context(), "f", "acme", from, until, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				last := call == len(tc.calls)-1
				if len(page.Jobs) != want || (page.Next == 0) != last {
					t.Fatalf("call %d: %d jobs, next %d; want %d, and a next position unless it is the last call", call+1, len(page.Jobs), page.Next, want)
				}
				for _, j := range page.Jobs {
					if j.Tenant != "acme" || j.State != sluicev1.Job_QUEUED || redriven[j.Id] {
						t.Errorf("call %d requeued %v", call+1, j)
					}
					redriven[j.Id] = true
				}
				from, until = page.Next, page.Until
			}
			for _, id := range ids {
				if !redriven[id] {
					t.Errorf("acme's job %s not redriven", id)
				}
			}
			page, err := q.DeadLetters(t.Context(), "f", "bolt", 0, 10, false)
			if err != nil || len(page.Letters) != len(others) {
				t.Errorf("bolt's letters after acme's redrive: %d, %v; want all %d", len(page.Letters), err, len(others))
			}
		})
	}
}

// legacyLetters moves the jobs' dead letters to the subjects they had
// before the subjects named the tenant, as an older Sluice stored them.
func legacyLetters(t *testing.T, js jetstream.JetStream, tenant string, ids []string) {
	t.Helper()
	s, err := js.Stream(t.Context(), deadletter.Stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		msg, err := s.GetLastMsgForSubject(t.Context(), deadletter.Subject("f", tenant, id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(t.Context(), deadletter.Prefix+"f."+id, msg.Data); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteMsg(t.Context(), msg.Sequence); err != nil {
			t.Fatal(err)
		}
	}
}

// Dead letters stored in the subject layout of before are read where they
// are, and moved to the layout of now when the queue is opened.
func TestDeadLettersOfTheEarlierLayout(t *testing.T) {
	srv := buffertest.Start(t, "")
	nc := srv.Connect(t)
	js, _ := jetstream.New(nc)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	acme := buffertest.DeadLetters(t, q, "f", "acme", 3)
	bolt := buffertest.DeadLetters(t, q, "f", "bolt", 2)
	legacyLetters(t, js, "acme", acme)
	legacyLetters(t, js, "bolt", bolt[:1])

	check := func(t *testing.T, q *buffer.Queue, acme []string) {
		t.Helper()
		var listed []string
		for from := uint64(0); ; {
			page, err := q.DeadLetters(t.Context(), "f", "acme", from, 2, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, dl := range page.Letters {
				if dl.Job.Tenant != "acme" || len(dl.Payload) == 0 {
					t.Errorf("acme's list holds %v", dl)
				}
				listed = append(listed, dl.Job.Id)
			}
			if from = page.Next; from == 0 {
				break
			}
		}
		if len(listed) != len(acme) {
			t.Errorf("acme's letters listed: %v; want %v", listed, acme)
		}
		if n, err := q.DeadLetterCount(t.Context(), "f"); err != nil || n != int64(len(acme)+len(bolt)) {
			t.Errorf("count = %d, %v; want %d", n, err, len(acme)+len(bolt))
		}
		// bolt sees none of acme's, by ID either.
		if _, notFound, err := q.Redrive(t.Context(), "f", "bolt", acme[:1]); err != nil || len(notFound) != 1 {
			t.Errorf("bolt redriving acme's job: not found %v, %v", notFound, err)
		}
	}
	t.Run("read where they are", func(t *testing.T) {
		check(t, q, acme)
		jobs, notFound, err := q.Redrive(t.Context(), "f", "acme", acme[:1])
		if err != nil || len(jobs) != 1 || len(notFound) != 0 {
			t.Fatalf("redrive of a letter of before: %v, %v, %v", jobs, notFound, err)
		}
		acme = acme[1:]
	})
	t.Run("moved by Open", func(t *testing.T) {
		q, err := buffer.Open(t.Context(), nc, buffer.Config{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := js.Stream(t.Context(), deadletter.Stream)
		if msg, err := s.GetMsg(t.Context(), 1, jetstream.WithGetMsgSubject(deadletter.Prefix+"*.*")); err == nil {
			t.Errorf("a letter left in the layout of before: %s", msg.Subject)
		}
		check(t, q, acme)
		if err := q.DeleteDeadLetter(t.Context(), "f", "acme", acme[0]); err != nil {
			t.Errorf("delete a moved letter: %v", err)
		}
		if page, err := q.RedriveAll(t.Context(), "f", "bolt", 0, 0, 10); err != nil || len(page.Jobs) != len(bolt) {
			t.Errorf("bolt's redrive of all: %v, %v; want its %d", page.Jobs, err, len(bolt))
		}
	})
}
