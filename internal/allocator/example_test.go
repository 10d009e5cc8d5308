/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package allocator_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/kipam/kipam/internal/allocator"
)

func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, _ := allocator.New(netip.MustParsePrefix("10.0.0.0/24"), allocator.WithClock(func() time.Time { return now }))
	_ = a.ReserveFirst(1) // the gateway
	_ = a.ReserveLast(1)  // broadcast

	host, _ := a.AllocateNext(32)
	subnet, _ := a.AllocateNext(26)
	fmt.Println(host, subnet)

	// A released host is held back for a minute before it is handed out again.
	_ = a.ReleaseUntil(host, now.Add(time.Minute))
	next, _ := a.AllocateNext(32)
	fmt.Println(next)

	_, err := a.AllocateNext(25)
	fmt.Println(err)

	u := a.Usage()
	fmt.Println(u.Capacity, u.Allocated, u.Reserved, u.Held, u.Available, u.LargestFree)
	// Output:
	// 10.0.0.1/32 10.0.0.64/26
	// 10.0.0.2/32
	// no free /25 left (largest free prefix /26)
	// 256 65 2 1 188 26
}
