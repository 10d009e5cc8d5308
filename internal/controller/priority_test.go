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

package controller

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// TestAReleasePendingAtALeaderChangeIsNotLeftBehindNewEvents: a new
// leader's initial list holds a claim being deleted (its release left
// pending by the last leader) and a claim that waits for space. The claim
// controller's handlers must queue the release at the priority of a new
// event, not below every new event as a resync: under steady traffic
// those kept the workers busy, and releases waited up to ten minutes.
func TestAReleasePendingAtALeaderChangeIsNotLeftBehindNewEvents(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("ipclaim-test")
	defer q.ShutDown()
	initial := &claimEvents{r: &IPClaimReconciler{}}
	list := func(c *ipamv1alpha1.IPClaim) {
		initial.create(context.Background(), event.CreateEvent{Object: c, IsInInitialList: true}, q)
	}
	now := metav1.Now()
	list(&ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "held"}})
	deleted := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "deleted",
		DeletionTimestamp: &now, Finalizers: []string{ipamv1alpha1.ClaimFinalizer}}}
	list(deleted)
	// A new event, as the traffic brings them.
	(&handler.EnqueueRequestForObject{}).Create(context.Background(),
		event.CreateEvent{Object: &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "new"}}}, q)

	var got []string
	for range 3 {
		req, prio, _ := q.GetWithPriority()
		got = append(got, req.Name)
		q.Done(req)
		if req.NamespacedName == client.ObjectKeyFromObject(deleted) && prio < 0 {
			t.Errorf("the release pending at the leader change was queued at priority %d, below new events", prio)
		}
	}
	if got[2] != "held" {
		t.Errorf("reconciled in the order %v; want the waiting claim of the initial list last", got)
	}
}
