-- Argo CD health of a trafficmirror.io resource (MirrorTarget, MirrorFilter, MirrorSession).
-- The operator writes status.phase (Pending, Ready, Failed, Deleting; sessions also Completed), status.observedGeneration
-- and a Ready condition whose reason/message say why. Written for Argo CD's Lua 5.1 (gopher-lua).
local hs = {}

local function ready_condition(status)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local function explain(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition ~= nil and condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the trafficmirror operator to reconcile"
  return hs
end

local status = obj.status
local condition = ready_condition(status)
local generation = obj.metadata.generation
local observed = status.observedGeneration

if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if status.phase == "Ready" then
  hs.status = "Healthy"
  hs.message = explain(condition, "Ready")
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(condition, "Failed")
elseif status.phase == "Deleting" then
  hs.status = "Progressing"
  hs.message = explain(condition, "Deleting")
elseif status.phase == "Completed" then
  -- A time-boxed session whose time is over: done as asked, nothing left in AWS.
  hs.status = "Healthy"
  hs.message = explain(condition, "Completed")
else
  hs.status = "Progressing"
  hs.message = explain(condition, status.phase)
end
return hs
