package dispatch

import (
	"slices"
	"testing"
)

func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int
		shares []share
		want   []int
	}{
		{"all busy share evenly", 60, []share{{10, 50}, {10, 50}, {10, 50}}, []int{20, 20, 20}},
		{"idle ones keep one slot, the busy one takes to its cap", 60, []share{{10, 50}, {10, 0}, {10, 0}}, []int{50, 1, 1}},
		{"work-conserving: unused reserve lent", 60, []share{{10, 50}, {10, 3}, {10, 0}}, []int{50, 3, 1}},
		{"reserve first, then even", 30, []share{{20, 50}, {5, 50}}, []int{23, 7}},
		{"reserve only as far as wanted", 30, []share{{20, 2}, {5, 50}}, []int{2, 28}},
		{"shrunk pool scales the reserves", 15, []share{{10, 50}, {10, 50}, {10, 50}}, []int{5, 5, 5}},
		{"nobody wants more than there is", 100, []share{{0, 7}, {0, 3}}, []int{7, 3}},
		{"no reserves: max-min fair", 10, []share{{0, 2}, {0, 50}, {0, 50}}, []int{2, 4, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := allocate(tc.limit, tc.shares)
			if !slices.Equal(got, tc.want) {
				t.Errorf("allocate(%d, %v) = %v, want %v", tc.limit, tc.shares, got, tc.want)
			}
			sum := 0
			for _, g := range got {
				sum += g
			}
			if sum > tc.limit {
				t.Errorf("allocate gave %d, more than the limit of %d", sum, tc.limit)
			}
		})
	}
}
