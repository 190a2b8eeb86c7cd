package share

import (
	"slices"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

func TestPool(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int
		claims []Claim
		want   []int
	}{
		{"all busy share evenly", 60, []Claim{{10, 50}, {10, 50}, {10, 50}}, []int{20, 20, 20}},
		{"idle ones keep one slot, the busy one takes to its cap", 60, []Claim{{10, 50}, {10, 0}, {10, 0}}, []int{50, 1, 1}},
		{"work-conserving: unused reserve lent", 60, []Claim{{10, 50}, {10, 3}, {10, 0}}, []int{50, 3, 1}},
		{"reserve first, then even", 30, []Claim{{20, 50}, {5, 50}}, []int{23, 7}},
		{"reserve only as far as wanted", 30, []Claim{{20, 2}, {5, 50}}, []int{2, 28}},
		{"shrunk pool scales the reserves", 15, []Claim{{10, 50}, {10, 50}, {10, 50}}, []int{5, 5, 5}},
		{"nobody wants more than there is", 100, []Claim{{0, 7}, {0, 3}}, []int{7, 3}},
		{"no reserves: max-min fair", 10, []Claim{{0, 2}, {0, 50}, {0, 50}}, []int{2, 4, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Pool(tc.limit, tc.claims)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Pool(%d, %v) = %v, want %v", tc.limit, tc.claims, got, tc.want)
			}
			sum := 0
			for _, g := range got {
				sum += g
			}
			if sum > tc.limit {
				t.Errorf("Pool gave %d, more than the limit of %d", sum, tc.limit)
			}
		})
	}
}

func TestLanes(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	const aging = time.Minute
	waited := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	for _, tc := range []struct {
		name  string
		g     int
		lanes []Lane
		want  []int
	}{
		{"no work: the default lane keeps one slot", 10, []Lane{{}, {Tenant: "a"}}, []int{1, 0}},
		{"tenants by weight", 9, []Lane{{}, {Tenant: "a", Weight: 1, Want: 100}, {Tenant: "b", Weight: 2, Want: 100}}, []int{0, 3, 6}},
		{"what one cannot use goes to the others", 9, []Lane{{}, {Tenant: "a", Weight: 1, Want: 1}, {Tenant: "b", Weight: 2, Want: 100}}, []int{0, 1, 8}},
		{"within a tenant, higher priority first", 5, []Lane{{},
			{Tenant: "a", Priority: sluicev1.Priority_LOW, Want: 10},
			{Tenant: "a", Priority: sluicev1.Priority_HIGH, Want: 3},
			{Tenant: "a", Priority: sluicev1.Priority_NORMAL, Want: 10}}, []int{0, 0, 3, 2}},
		{"a low lane that waited two agings goes before a fresh normal one", 5, []Lane{{},
			{Tenant: "a", Priority: sluicev1.Priority_NORMAL, Want: 10, WaitingSince: waited(time.Second)},
			{Tenant: "a", Priority: sluicev1.Priority_LOW, Want: 3, WaitingSince: waited(2*aging + time.Second)}}, []int{0, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Lanes(tc.g, tc.lanes, aging, now); !slices.Equal(got, tc.want) {
				t.Errorf("Lanes(%d, …) = %v, want %v", tc.g, got, tc.want)
			}
		})
	}
}
