// Work-order lifecycle (spec/work-orders.md): draft -> submitted -> accepted -> running ->
// succeeded | failed, and canceled from any state that is not terminal. Nothing else.

export const WORK_ORDER_STATUSES = [
  "draft",
  "submitted",
  "accepted",
  "running",
  "succeeded",
  "failed",
  "canceled",
] as const;

export type WorkOrderStatus = (typeof WORK_ORDER_STATUSES)[number];

const NEXT: Record<WorkOrderStatus, readonly WorkOrderStatus[]> = {
  draft: ["submitted", "canceled"],
  submitted: ["accepted", "canceled"],
  accepted: ["running", "canceled"],
  running: ["succeeded", "failed", "canceled"],
  succeeded: [],
  failed: [],
  canceled: [],
};

export function canTransition(from: WorkOrderStatus, to: WorkOrderStatus): boolean {
  return NEXT[from].includes(to);
}
