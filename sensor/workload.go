package sensor

import (
	"strings"
)

// Pod labels the controllers of Kubernetes set on the pods they create;
// containerd keeps them on the pod's sandbox container.
const (
	labelPodTemplateHash  = "pod-template-hash"                  // Deployment (through its ReplicaSet)
	labelRevisionHash     = "controller-revision-hash"           // StatefulSet and DaemonSet
	labelStatefulPodName  = "statefulset.kubernetes.io/pod-name" // StatefulSet
	labelTemplateGen      = "pod-template-generation"            // DaemonSet
	labelJobName          = "batch.kubernetes.io/job-name"       // Job (v1.27+)
	labelJobNameLegacy    = "job-name"                           // Job (older, still set)
	cronJobSuffixMinDigit = 8                                    // a CronJob's Job: <cronjob>-<minutes since 1970>
)

// Workload names the owner of pod podName from the pod's labels, as
// "<kind>/<name>". The owner itself (the pod's ownerReferences) is not in
// what containerd keeps, so it is derived from the names and labels the
// controllers give their pods:
//   - a Job's pods carry job-name (batch.kubernetes.io/job-name): "job/<job>",
//     or "cronjob/<c>" when the job is named "<c>-<8 or more digits>", the
//     name a CronJob gives each of its Jobs;
//   - a Deployment's pods carry pod-template-hash H and are named
//     "<deployment>-H-<suffix>": "deployment/<deployment>";
//   - a StatefulSet's pods carry controller-revision-hash and
//     statefulset.kubernetes.io/pod-name and are named "<set>-<ordinal>":
//     "statefulset/<set>";
//   - a DaemonSet's pods carry controller-revision-hash and
//     pod-template-generation and are named "<set>-<suffix>": "daemonset/<set>";
//   - anything else, a bare pod or one whose name does not fit its labels:
//     "pod/<pod name>", its own workload.
//
// Limits: the labels are the pod's, and whoever may create pods in a
// namespace may create one that fits these rules and so share a workload's
// profile there; the namespace itself comes from the kubelet, so no pod
// can claim a workload of another namespace. A ReplicaSet made without a
// Deployment, with pod-template-hash set by hand, reads as a Deployment
// of the same prefix.
func Workload(podName string, labels map[string]string) string {
	if podName == "" {
		return ""
	}
	job := labels[labelJobName]
	if job == "" {
		job = labels[labelJobNameLegacy]
	}
	if job != "" && strings.HasPrefix(podName, job+"-") {
		if i := strings.LastIndexByte(job, '-'); i > 0 && len(job)-i-1 >= cronJobSuffixMinDigit && digits(job[i+1:]) {
			return "cronjob/" + job[:i]
		}
		return "job/" + job
	}
	if h := labels[labelPodTemplateHash]; h != "" {
		if i := strings.LastIndex(podName, "-"+h+"-"); i > 0 && i+len(h)+2 < len(podName) {
			return "deployment/" + podName[:i]
		}
	}
	if labels[labelRevisionHash] != "" {
		i := strings.LastIndexByte(podName, '-')
		switch {
		case i <= 0 || i == len(podName)-1:
		case labels[labelStatefulPodName] == podName && digits(podName[i+1:]):
			return "statefulset/" + podName[:i]
		case labels[labelTemplateGen] != "":
			return "daemonset/" + podName[:i]
		}
	}
	return "pod/" + podName
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
